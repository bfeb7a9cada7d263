/** Serialises async work on one connection (SQLite has a single writer; a transaction must not interleave with another). */
export class Mutex {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(fn: () => Promise<T> | T): Promise<T> {
    const result = this.tail.then(fn, fn);
    this.tail = result.catch(ignore);
    return result;
  }
}

const ignore = (): undefined => undefined;
