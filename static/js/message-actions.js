// The buttons on chat messages: copy an answer, copy each code block, regenerate the last answer, edit a
// sent message. Plain DOM, labelled for screen readers; what each does is the controller's (app.js).

function button(text, label, className, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = className;
  b.textContent = text;
  b.setAttribute("aria-label", label);
  b.addEventListener("click", onClick);
  return b;
}

/** Copies text; the button says whether it worked. */
export async function copyText(text, b) {
  const before = b.textContent;
  try {
    await navigator.clipboard.writeText(text);
    b.textContent = "Copied";
  } catch {
    b.textContent = "Copy failed";
  }
  setTimeout(() => {
    b.textContent = before;
  }, 1500);
}

/**
 * Add the actions to a rendered message bubble. handlers: {onCopy(text, button), onRegenerate?, onEdit?}
 * (regenerate only on the last answer, edit only on the user's messages).
 */
export function decorateMessage(bubble, message, { index, isLastAnswer, onCopy, onRegenerate, onEdit }) {
  bubble.dataset.index = String(index);
  bubble.querySelector(".message-actions")?.remove();
  const bar = document.createElement("div");
  bar.className = "message-actions";
  if (message.role === "assistant") {
    bar.append(button("Copy", "Copy this answer", "copy-answer", (e) => onCopy(message.content, e.currentTarget)));
    bubble.querySelectorAll(".body pre").forEach((pre, i) => {
      const code = pre.querySelector("code") || pre;
      const b = button("Copy code", `Copy code block ${i + 1}`, "copy-code", (e) => onCopy(code.textContent, e.currentTarget));
      pre.before(b);
    });
    if (isLastAnswer && onRegenerate) bar.append(button("Regenerate", "Regenerate this answer", "regenerate", onRegenerate));
  } else if (message.role === "user" && onEdit) {
    bar.append(button("Edit", "Edit this message and send it again", "edit", () => onEdit(index)));
  }
  bubble.append(bar);
}
