// The prompt as web-llm 0.2.86 assembles it from a variant's conv_template (mlc-chat-config.json): the
// pieces it tokenizes one by one. The CPU tier (llama.cpp in wasm) has no web-llm, so it builds the same
// pieces here and tokenizes each the same way, which makes its prompt token ids equal to the WebGPU
// path's and the server's (build_pipeline/chat_template.py `prompt_pieces` is the Python twin; the page
// tests compare the two).

/** web-llm's default for a missing role separator (`x || x == "" ? x : ": "`). */
function sep(value) {
  return value || value === "" ? value : ": ";
}

/**
 * messages: [{role, content}] (a leading system message overrides the template's system message).
 * Returns the list of prompt pieces, ending with the assistant's generation prefix.
 */
export function promptPieces(conv, messages) {
  let system = conv.system_message;
  const turns = [];
  for (const m of messages) {
    if (m.role === "system") system = m.content;
    else turns.push(m);
  }
  let sysPrompt = conv.system_template.replaceAll("{system_message}", system);
  if (system === "" && conv.render_empty_system_message === false) sysPrompt = "";
  const templates = conv.role_templates || {};
  const pieces = sysPrompt ? [sysPrompt] : [];
  turns.forEach((m, i) => {
    const slot = `{${m.role}_message}`;
    let text = (templates[m.role] ?? slot).replaceAll(slot, m.content);
    text = text.replaceAll("{function_string}", "");
    const bare = conv.add_role_after_system_message === false && sysPrompt && i === 0;
    const prefix = bare ? "" : conv.roles[m.role] + sep(conv.role_content_sep);
    pieces.push(prefix + text + conv.seps[i % conv.seps.length]);
  });
  pieces.push(conv.roles.assistant + sep(conv.role_empty_sep));
  return pieces;
}

/** Token ids: the template's prefix ids, then every piece tokenized on its own (special tokens parsed). */
export async function promptTokenIds(conv, messages, tokenize) {
  const ids = [...(conv.system_prefix_token_ids || [])];
  for (const piece of promptPieces(conv, messages)) ids.push(...(await tokenize(piece)));
  return ids;
}
