// Conversations live only in this browser (IndexedDB "lantern", store "conversations").
// A conversation: {id, title, createdAt, updatedAt, modelId, mode, systemPrompt, messages: [{role, content, stats?}]}.

const DB_NAME = "lantern";
const STORE = "conversations";
let dbPromise = null;

function open() {
  if (!dbPromise) {
    dbPromise = new Promise((resolve, reject) => {
      const request = indexedDB.open(DB_NAME, 1);
      request.onupgradeneeded = () => {
        const store = request.result.createObjectStore(STORE, { keyPath: "id" });
        store.createIndex("updatedAt", "updatedAt");
      };
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
  }
  return dbPromise;
}

async function run(mode, action) {
  const db = await open();
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, mode);
    const request = action(tx.objectStore(STORE));
    tx.oncomplete = () => resolve(request ? request.result : undefined);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

export function newConversation(fields = {}) {
  const now = Date.now();
  return { id: crypto.randomUUID(), title: "New chat", createdAt: now, updatedAt: now, messages: [], ...fields };
}

export async function listConversations() {
  const all = await run("readonly", (store) => store.getAll());
  return all.sort((a, b) => b.updatedAt - a.updatedAt);
}

export function getConversation(id) {
  return run("readonly", (store) => store.get(id));
}

/** touch: false keeps updatedAt (an imported conversation keeps its own times). */
export function saveConversation(conversation, { touch = true } = {}) {
  if (touch || !Number.isFinite(conversation.updatedAt)) conversation.updatedAt = Date.now();
  // Structured clone drops nothing we need; a copy keeps later UI edits out of the stored record.
  return run("readwrite", (store) => store.put(structuredClone(conversation)));
}

export function deleteConversation(id) {
  return run("readwrite", (store) => store.delete(id));
}
