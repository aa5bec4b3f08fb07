// Narrow screens (phones): the conversations and settings panels are drawers behind two header buttons.
// CSS decides the layout (static/css/app.css hides the buttons and shows both panels beside the chat on
// wide screens); this module only opens and closes them: one at a time, aria-expanded on its button,
// the rest of the page inert while one is open, closed by its ✕ button, the backdrop or Escape, and the
// focus back on the button that opened it.

const NARROW = "(max-width: 900px)";
const TOGGLES = ["conversations-toggle", "settings-toggle"];

let current = null; // the toggle button of the open drawer

const drawerOf = (toggle) => document.getElementById(toggle.getAttribute("aria-controls"));
const behind = () => [document.querySelector(".topbar"), document.querySelector(".main")];

export function closeDrawer({ focus = true } = {}) {
  if (!current) return;
  const toggle = current;
  current = null;
  drawerOf(toggle).classList.remove("open");
  toggle.setAttribute("aria-expanded", "false");
  document.getElementById("drawer-backdrop").hidden = true;
  for (const node of behind()) node.inert = false;
  for (const id of TOGGLES) drawerOf(document.getElementById(id)).inert = false;
  if (focus) toggle.focus();
}

export function openDrawer(toggle) {
  if (current === toggle) return;
  closeDrawer({ focus: false });
  current = toggle;
  const drawer = drawerOf(toggle);
  drawer.classList.add("open");
  toggle.setAttribute("aria-expanded", "true");
  document.getElementById("drawer-backdrop").hidden = false;
  for (const node of behind()) node.inert = true;
  for (const id of TOGGLES) {
    const other = drawerOf(document.getElementById(id));
    if (other !== drawer) other.inert = true;
  }
  drawer.querySelector(".drawer-close").focus();
}

export function bindDrawers() {
  for (const id of TOGGLES) {
    const toggle = document.getElementById(id);
    toggle.addEventListener("click", () => (current === toggle ? closeDrawer() : openDrawer(toggle)));
    drawerOf(toggle).querySelector(".drawer-close").addEventListener("click", () => closeDrawer());
  }
  document.getElementById("drawer-backdrop").addEventListener("click", () => closeDrawer());
  document.addEventListener("keydown", (e) => {
    // Escape in the rename box only cancels the rename; an open dialog closes itself first.
    if (e.key !== "Escape" || !current || e.target.closest(".title-input") || document.querySelector("dialog[open]")) return;
    e.preventDefault();
    closeDrawer();
  });
  // Opening a conversation or starting a new one shows it: the conversations drawer closes.
  document.getElementById("conversations-drawer").addEventListener("click", (e) => {
    if (current && e.target.closest("#new-chat, button.open")) closeDrawer();
  });
  // Widened past the phone layout: both panels are back beside the chat, nothing is left inert.
  matchMedia(NARROW).addEventListener("change", (e) => {
    if (!e.matches) closeDrawer({ focus: false });
  });
}
