import { describe, expect, it } from "vitest";
import { render } from "@testing-library/react";
import { UsageChart, stackRows } from "./UsageChart";

const from = "2026-01-01T00:00:00.000Z";

function swatches(container: HTMLElement): Record<string, string> {
  return Object.fromEntries(
    [...container.querySelectorAll(".legend li")].map((li) => [li.querySelector(".legend-key")!.textContent, li.querySelector(".swatch")!.className]),
  );
}

describe("UsageChart colours", () => {
  it("keep each name's colour when the ranking by total changes", () => {
    const before = stackRows(
      [
        { bucketStart: "2026-01-01T00:00:00+00:00", key: "Answer", totals: { credits: "5" } },
        { bucketStart: "2026-01-01T00:00:00+00:00", key: "Web search", totals: { credits: "1" } },
      ],
      from,
      3,
    );
    const after = stackRows(
      [
        { bucketStart: "2026-01-01T00:00:00+00:00", key: "Answer", totals: { credits: "5" } },
        { bucketStart: "2026-01-01T00:00:00+00:00", key: "Web search", totals: { credits: "1" } },
        { bucketStart: "2026-01-02T00:00:00+00:00", key: "Web search", totals: { credits: "9" } },
      ],
      from,
      3,
    );
    expect(before.keys).toEqual(["Answer", "Web search"]);
    expect(after.keys).toEqual(["Web search", "Answer"]); // the ranking swapped
    const { container, rerender } = render(<UsageChart data={before} label="usage" />);
    const first = swatches(container);
    expect(first.Answer).not.toBe(first["Web search"]);
    rerender(<UsageChart data={after} label="usage" />);
    expect(swatches(container)).toEqual(first);
  });
});
