// The benchmarks' unit of work: `lanes` concurrent callers, each doing `perLane` hold+settle pairs on customer 'c'.
export async function holdSettlePairs(ledger, lanes, perLane, label) {
  await Promise.all(
    Array.from({ length: lanes }, async (_, lane) => {
      for (let i = 0; i < perLane; i++) {
        const key = `${label}:${lane}:${i}`;
        const h = await ledger.hold({ customerId: 'c', amount: 1_000_000n, idempotencyKey: key });
        await ledger.settle({ holdId: h.id, amount: 25_000n, idempotencyKey: `${key}:s` });
      }
    }),
  );
}
