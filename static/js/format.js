// Numbers in words people read: sizes in MB/GB, durations, rates.

export function formatBytes(n) {
  if (n == null || !Number.isFinite(n)) return "unknown size";
  if (n >= 1e9) return `${(n / 1e9).toFixed(n >= 1e10 ? 0 : 1)} GB`;
  if (n >= 1e6) return `${Math.round(n / 1e6)} MB`;
  if (n >= 1e3) return `${Math.round(n / 1e3)} kB`;
  return `${n} bytes`;
}

export function formatSeconds(s) {
  if (s == null || !Number.isFinite(s)) return "–";
  return s < 10 ? `${s.toFixed(2)} s` : `${Math.round(s)} s`;
}

export function formatRate(x, unit) {
  if (x == null || !Number.isFinite(x)) return "–";
  return `${x < 10 ? x.toFixed(1) : Math.round(x)} ${unit}`;
}
