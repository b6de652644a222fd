import { describe, expect, it } from "vitest";
import { PALETTE, colorSlot, colorSlots, nameHash } from "./colors";

describe("chart colours belong to names", () => {
  it("hashes a name to the same slot every time (FNV-1a)", () => {
    expect(nameHash("")).toBe(0x811c9dc5);
    expect(nameHash("a")).toBe(0xe40c292c); // the published FNV-1a 32-bit value of "a"
    expect(colorSlot("Web search")).toBe(colorSlot("Web search"));
    expect(colorSlot("Web search")).toBeGreaterThanOrEqual(0);
    expect(colorSlot("Web search")).toBeLessThan(PALETTE.length);
  });

  it("gives a name its own slot whatever the order of the chart's names", () => {
    const names = ["Web search", "Answer", "Transcription"];
    const slots = colorSlots(names);
    expect(colorSlots([...names].reverse())).toEqual(slots);
    expect(colorSlots(["Transcription", "Web search", "Answer"])).toEqual(slots);
    expect(slots["Web search"]).toBe(colorSlot("Web search"));
  });

  it("keeps colours apart when two names of a chart hash alike: the first name in order keeps its own", () => {
    // "Answer" and "Transcription" both hash to the last slot.
    expect(colorSlot("Answer")).toBe(colorSlot("Transcription"));
    const slots = colorSlots(["Transcription", "Answer"]);
    expect(slots.Answer).toBe(colorSlot("Answer"));
    expect(slots.Transcription).toBe((colorSlot("Answer") + 1) % PALETTE.length);
  });

  it("gives up to a palette's worth of names distinct colours, then repeats", () => {
    const eight = Array.from({ length: PALETTE.length }, (_, i) => `agent-${i}`);
    expect(new Set(Object.values(colorSlots(eight))).size).toBe(PALETTE.length);
    const nine = colorSlots([...eight, "agent-8"]);
    expect(Object.keys(nine)).toHaveLength(9);
    expect(nine["agent-8"]).toBe(colorSlot("agent-8"));
  });
});
