// The page's one state, and every move it may make, declared here and nowhere else.
//
// Each state lists the states it may go to next. Re-entering the same state is always allowed (a model
// re-selected after a settings change lands where it was), and so is "error" (startup or a broken store).
// Any other move is a bug in the page: it is refused with a thrown Error, logged to the console and kept
// in `lantern.stateErrors` so tests see it. Tests read `lantern.state` (a getter) and `lantern.stateHistory`.

/** What choosing a model (selectModel) can end in: every settled state can lead there. */
const SELECT = ["unsupported", "needs-download", "downloaded", "loading-engine"];
/** Where the user's own actions lead from any settled state: a download, the server, back to local. */
const USER = ["downloading", "connecting-server", "ready", ...SELECT];

export const TRANSITIONS = Object.freeze({
  starting: ["detecting"],
  detecting: [...SELECT, "connecting-server"], // connecting-server: server mode restored after a reload
  unsupported: USER,
  "needs-download": USER,
  // In server mode the server keeps answering while the local model downloads.
  downloading: ["download-failed", "connecting-server", "server-unavailable", "ready", "generating", ...SELECT],
  "download-failed": USER,
  downloaded: USER,
  "loading-engine": ["ready", "engine-failed", "connecting-server", ...SELECT],
  "engine-failed": USER,
  "connecting-server": ["ready", "server-unavailable", ...SELECT],
  "server-unavailable": USER,
  ready: ["generating", "engine-failed", ...USER],
  // An answer ends in ready; a GPU lost mid-answer in engine-failed; a download finishing in server
  // mode while the server answers reports the server's state.
  generating: ["ready", "engine-failed", "server-unavailable"],
  error: USER,
});

export const STATES = Object.freeze(Object.keys(TRANSITIONS));

export class IllegalTransition extends Error {
  constructor(from, to) {
    super(`Lantern page bug: state "${from}" may not go to "${to}" (allowed: ${TRANSITIONS[from].join(", ")})`);
    this.name = "IllegalTransition";
  }
}

export function allowed(from, to) {
  return to === from || to === "error" || (TRANSITIONS[from] || []).includes(to);
}

/**
 * The state holder: `go(to)` moves (or throws IllegalTransition); `onChange(state)` runs after each move.
 * `record` gets read-only `state` and `stateHistory` views and the `stateErrors` list.
 */
export function createState(record, onChange = () => {}) {
  let current = "starting";
  const history = [{ state: current, t: Math.round(performance.now()) }];
  const errors = [];
  Object.defineProperty(record, "state", { get: () => current, enumerable: true });
  Object.defineProperty(record, "stateHistory", { get: () => history.map((h) => ({ ...h })), enumerable: true });
  Object.defineProperty(record, "stateErrors", { get: () => [...errors], enumerable: true });
  return {
    get current() {
      return current;
    },
    is(...states) {
      return states.includes(current);
    },
    go(to) {
      if (!(to in TRANSITIONS)) throw new Error(`Lantern page bug: unknown state "${to}"`);
      if (!allowed(current, to)) {
        const err = new IllegalTransition(current, to);
        errors.push({ from: current, to, t: Math.round(performance.now()) });
        console.error(err);
        throw err;
      }
      current = to;
      history.push({ state: to, t: Math.round(performance.now()) });
      onChange(to);
    },
  };
}
