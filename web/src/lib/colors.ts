// Chart colours that belong to a name, not to a rank: "Web search" or "support-bot" is drawn in the colour its
// name hashes to, in every chart, view and render, however the totals order the names. Only when two names of
// one chart hash to the same colour does one of them (the later in code-unit order) take the next free one.

/** The palette; `.swatch-<i>` in styles.css is the same colour as PALETTE[i]. */
export const PALETTE = ["#4f46e5", "#0ea5e9", "#f59e0b", "#10b981", "#ec4899", "#8b5cf6", "#64748b", "#ef4444"];

/** FNV-1a (32 bits) of the name's UTF-16 code units: the same number for the same name, in every browser. */
export function nameHash(name: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) {
    hash ^= name.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash >>> 0;
}

/** A name's own palette slot. */
export function colorSlot(name: string): number {
  return nameHash(name) % PALETTE.length;
}

/**
 * Palette slots for the names of one chart: each name gets its own slot; when two names share one, the name
 * first in code-unit order keeps it and the other takes the next free slot (so colours stay distinct while a
 * chart has at most PALETTE.length names). Depends only on the set of names, never on their order or totals.
 */
export function colorSlots(names: readonly string[]): Record<string, number> {
  const slots: Record<string, number> = {};
  const taken = new Set<number>();
  for (const name of [...new Set(names)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))) {
    let slot = colorSlot(name);
    if (taken.size < PALETTE.length) {
      while (taken.has(slot)) slot = (slot + 1) % PALETTE.length;
    }
    taken.add(slot);
    slots[name] = slot;
  }
  return slots;
}
