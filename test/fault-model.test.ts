/**
 * The fault suite's content model (helpers/fault-model.ts), on the numbers of
 * docs/testing.md finding 5: seed 491318484, key obj-3 in both pools. Its
 * versions 5-9 are 217881 B; a full write forced at version 7 (the suite
 * forces one after corrupting a copy, fault 3 of that run: ec/obj-3's shard)
 * makes version 9 57303 B. The suite reported "rep/obj-3: read returned bytes
 * of no version (217881 B), acknowledged is 9 (57303 B)": the model's forced
 * marks and cache were keyed by name, so forcing ec/obj-3 changed rep/obj-3.
 */
import { describe, expect, it } from 'vitest';
import { ContentModel } from './helpers/fault-model.js';

const SEED = 491318484;

describe('fault suite content model', () => {
  it("a full write forced on one pool's object leaves the same name in another pool alone", () => {
    const m = new ContentModel(SEED);
    const before = m.contentAt('rep', 'obj-3', 9);
    expect(before.length).toBe(217881);
    m.forceFull('ec', 'obj-3', 7);
    expect(m.opOf('ec', 'obj-3', 7, m.contentAt('ec', 'obj-3', 6)).type).toBe('writeFull');
    expect(m.contentAt('ec', 'obj-3', 9).length).toBe(57303);
    // Whatever the cache holds: rep/obj-3's versions are unchanged.
    for (let v = 1; v <= 10; v++) expect(m.contentAt('rep', 'obj-3', v).equals(new ContentModel(SEED).contentAt('rep', 'obj-3', v))).toBe(true);
    expect(m.contentAt('rep', 'obj-3', 9).equals(before)).toBe(true);
    // Until forced, the same name has the same bytes in both pools (old seeds replay their contents).
    expect(m.contentAt('ec', 'obj-3', 6).equals(m.contentAt('rep', 'obj-3', 6))).toBe(true);
  });

  it('forcing a full write drops contents computed at or past it', () => {
    const m = new ContentModel(SEED);
    expect(m.contentAt('rep', 'obj-3', 9).length).toBe(217881);
    m.forceFull('rep', 'obj-3', 7);
    const fresh = new ContentModel(SEED);
    fresh.forceFull('rep', 'obj-3', 7);
    expect(m.contentAt('rep', 'obj-3', 9).length).toBe(57303);
    expect(m.contentAt('rep', 'obj-3', 9).equals(fresh.contentAt('rep', 'obj-3', 9))).toBe(true);
    // Versions before the forced one keep their bytes.
    expect(m.contentAt('rep', 'obj-3', 6).equals(new ContentModel(SEED).contentAt('rep', 'obj-3', 6))).toBe(true);
  });
});
