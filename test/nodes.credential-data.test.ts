import { describe, expect, it } from 'vitest';
import { credentialData, type FlowiseComponents } from '../nodes/shared/flowise';

/** A Flowise stand-in: one Credential table whose rows the test edits, and a decryption that counts its calls. */
function fakeFlowise() {
  const rows = new Map<string, { id: string; encryptedData: string }>();
  let decrypts = 0;
  const Credential = { name: 'Credential' };
  const options = {
    databaseEntities: { Credential },
    appDataSource: { getRepository: (e: unknown) => ({ findOneBy: async ({ id }: { id: string }) => (e === Credential ? (rows.get(id) ?? null) : null) }) },
  };
  const fc: FlowiseComponents = {
    getCredentialData: async () => {
      throw new Error('not used when the row can be read directly');
    },
    decryptCredentialData: async (enc: string) => {
      decrypts++;
      return JSON.parse(enc.replace(/^enc:/, ''));
    },
  };
  return { rows, options, fc, decrypts: () => decrypts };
}

describe('credentialData (a Billing Ledger credential read per prediction)', () => {
  it('reads the row every time but decrypts a ciphertext once; an edit or a deletion applies at the next read', async () => {
    const f = fakeFlowise();
    f.rows.set('c1', { id: 'c1', encryptedData: 'enc:{"billingTokenSecret":"s1"}' });
    expect(await credentialData('c1', f.options, f.fc)).toEqual({ billingTokenSecret: 's1' });
    const again = await credentialData('c1', f.options, f.fc);
    expect(again).toEqual({ billingTokenSecret: 's1' });
    expect(f.decrypts()).toBe(1);
    // A caller changing its copy changes nothing for the next one.
    again.billingTokenSecret = 'mutated';
    expect(await credentialData('c1', f.options, f.fc)).toEqual({ billingTokenSecret: 's1' });

    f.rows.set('c1', { id: 'c1', encryptedData: 'enc:{"billingTokenSecret":"s2"}' });
    expect(await credentialData('c1', f.options, f.fc)).toEqual({ billingTokenSecret: 's2' });
    expect(f.decrypts()).toBe(2);

    f.rows.delete('c1');
    expect(await credentialData('c1', f.options, f.fc)).toEqual({});
    f.rows.set('c1', { id: 'c1', encryptedData: 'enc:{"billingTokenSecret":"s2"}' });
    expect(await credentialData('c1', f.options, f.fc)).toEqual({ billingTokenSecret: 's2' });
    expect(f.decrypts()).toBe(3);
  });

  it("falls back to Flowise's own getCredentialData without a data source or a decryption export", async () => {
    const calls: string[] = [];
    const fc: FlowiseComponents = { getCredentialData: async (id) => (calls.push(id), { ledgerDatabase: 'x' }) };
    expect(await credentialData('c9', {}, fc)).toEqual({ ledgerDatabase: 'x' });
    expect(await credentialData('c9', fakeFlowise().options, fc)).toEqual({ ledgerDatabase: 'x' });
    expect(calls).toEqual(['c9', 'c9']);
  });
});
