// Consent to answer on the server lasts for this browser session only (sessionStorage, per tab).

const KEY = "lantern.serverConsent";

export function hasServerConsent() {
  try {
    return sessionStorage.getItem(KEY) === "granted";
  } catch {
    return false;
  }
}

export function grantServerConsent() {
  sessionStorage.setItem(KEY, "granted");
}

export function revokeServerConsent() {
  sessionStorage.removeItem(KEY);
}
