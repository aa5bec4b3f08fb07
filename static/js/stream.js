// One answer as it streams, for every engine: the OpenAI-style chunk loop (web-llm in the browser and the
// server's /v1 both stream `chat.completion.chunk`s) and the token/speed figures all engines report.
//
// stats = {source, ttftSeconds, decodeTokensPerSecond, promptTokens, completionTokens} (+ extras per engine).

export class AnswerStream {
  constructor(onDelta = () => {}) {
    this.onDelta = onDelta;
    this.started = performance.now();
    this.firstAt = null;
    this.text = "";
    this.deltas = 0;
    this.finishReason = null;
    this.usage = null;
  }

  /** Append generated text (ignored when empty); the first piece marks the time to first token. */
  emit(piece) {
    if (!piece) return;
    if (this.firstAt === null) this.firstAt = performance.now();
    this.deltas += 1;
    this.text += piece;
    this.onDelta(piece, this.text);
  }

  /** Take one chunk: its text, finish reason and usage. */
  take(chunk) {
    const choice = chunk.choices && chunk.choices[0];
    this.emit(choice && choice.delta && choice.delta.content);
    if (choice && choice.finish_reason) this.finishReason = choice.finish_reason;
    if (chunk.usage) this.usage = chunk.usage;
  }

  /** Read every chunk of an async iterable; `guard(promise)` may end the wait early (a lost GPU);
   * `afterChunk()` runs after each one. What was read stays on this object when the stream fails or is
   * stopped. */
  async read(chunks, guard = (p) => p, afterChunk = () => {}) {
    const it = chunks[Symbol.asyncIterator]();
    for (;;) {
      const { value, done } = await guard(it.next());
      if (done) return;
      this.take(value);
      afterChunk();
    }
  }

  /** Speeds as measured here: `tokens` generated (the first one comes at firstAt, the rest decode). */
  measured(tokens, { source = "client", promptTokens = null, ended = performance.now() } = {}) {
    const decodeSeconds = this.firstAt ? (ended - this.firstAt) / 1000 : null;
    return {
      source,
      ttftSeconds: this.firstAt ? (this.firstAt - this.started) / 1000 : null,
      decodeTokensPerSecond: decodeSeconds && tokens > 1 ? (tokens - 1) / decodeSeconds : null,
      promptTokens,
      completionTokens: tokens,
    };
  }

  /** Stats from the usage chunk, where the engine timed itself (web-llm's usage.extra), else measured here. */
  stats(source) {
    const usage = this.usage;
    const measured = this.measured(usage ? usage.completion_tokens : this.deltas,
      { source, promptTokens: usage ? usage.prompt_tokens : null });
    const extra = usage && usage.extra;
    if (!extra) return measured;
    return {
      ...measured,
      ttftSeconds: extra.time_to_first_token_s ?? measured.ttftSeconds,
      decodeTokensPerSecond: extra.decode_tokens_per_s ?? null,
    };
  }
}
