import { describe, expect, it, vi } from "vitest";
import { fireEvent, render, screen } from "@testing-library/react";
import { useState } from "react";
import { Tabs, StatusBadge, Meter } from "./ui";
import { LiveIndicator } from "./LiveIndicator";
import { stackRows } from "./UsageChart";

function TabsHarness({ onSelect }: { onSelect?: (id: string) => void }) {
  const [selected, setSelected] = useState("OVERVIEW");
  const tabs = [
    { id: "OVERVIEW", label: "Overview" },
    { id: "TRANSACTION", label: "Transaction" },
    { id: "BILLING", label: "Billing" },
  ];
  return (
    <Tabs
      label="My Credit"
      tabs={tabs}
      selected={selected}
      onSelect={(id) => {
        setSelected(id);
        onSelect?.(id);
      }}
    >
      <p>panel of {selected}</p>
    </Tabs>
  );
}

describe("Tabs", () => {
  it("mark the edge that has more tabs beyond it while the row scrolls", () => {
    render(<TabsHarness />);
    const row = screen.getByRole("tablist", { name: "My Credit" });
    const wrap = row.parentElement!;
    expect(wrap.className).toBe("tabs-wrap"); // jsdom lays nothing out: nothing overflows
    Object.defineProperty(row, "scrollWidth", { configurable: true, value: 400 });
    Object.defineProperty(row, "clientWidth", { configurable: true, value: 300 });
    fireEvent.scroll(row);
    expect(wrap.className).toBe("tabs-wrap more-right");
    row.scrollLeft = 50;
    fireEvent.scroll(row);
    expect(wrap.className).toBe("tabs-wrap more-left more-right");
    row.scrollLeft = 100;
    fireEvent.scroll(row);
    expect(wrap.className).toBe("tabs-wrap more-left");
  });

  it("are real tabs with a labelled panel", () => {
    render(<TabsHarness />);
    expect(screen.getByRole("tablist", { name: "My Credit" })).toBeTruthy();
    const tabs = screen.getAllByRole("tab");
    expect(tabs.map((t) => t.textContent)).toEqual(["Overview", "Transaction", "Billing"]);
    expect(tabs[0].getAttribute("aria-selected")).toBe("true");
    expect(screen.getByRole("tabpanel", { name: "Overview" }).textContent).toBe("panel of OVERVIEW");
  });

  it("move with the arrow keys, Home and End", () => {
    const onSelect = vi.fn();
    render(<TabsHarness onSelect={onSelect} />);
    const list = screen.getByRole("tablist");
    fireEvent.keyDown(list, { key: "ArrowRight" });
    expect(screen.getByRole("tab", { name: "Transaction" }).getAttribute("aria-selected")).toBe("true");
    expect(document.activeElement?.textContent).toBe("Transaction");
    fireEvent.keyDown(list, { key: "End" });
    expect(screen.getByRole("tabpanel", { name: "Billing" })).toBeTruthy();
    fireEvent.keyDown(list, { key: "ArrowRight" });
    expect(onSelect).toHaveBeenLastCalledWith("OVERVIEW");
    fireEvent.keyDown(list, { key: "ArrowLeft" });
    expect(onSelect).toHaveBeenLastCalledWith("BILLING");
    expect(screen.getByRole("tab", { name: "Overview" }).tabIndex).toBe(-1);
  });
});

describe("Tabs on a narrow screen", () => {
  it("scroll the row, not the page, to bring the selected tab into view", () => {
    const rect = (left: number, width: number) => ({ left, right: left + width, top: 0, bottom: 40, width, height: 40, x: left, y: 0, toJSON: () => ({}) });
    const spy = vi.spyOn(HTMLElement.prototype, "getBoundingClientRect").mockImplementation(function (this: HTMLElement) {
      if (this.getAttribute("role") === "tablist") return rect(0, 200) as DOMRect;
      const index = ["Overview", "Transaction", "Billing"].indexOf(this.textContent ?? "");
      return rect(index * 120 - (this.parentElement?.scrollLeft ?? 0), 110) as DOMRect;
    });
    render(<TabsHarness />);
    const list = screen.getByRole("tablist");
    expect(list.scrollLeft).toBe(0);
    fireEvent.keyDown(list, { key: "End" }); // Billing: 240..350, past the row's right edge at 200
    expect(list.scrollLeft).toBe(350 - 200 + 16);
    fireEvent.keyDown(list, { key: "Home" });
    expect(list.scrollLeft).toBe(0);
    spy.mockRestore();
  });
});

describe("small components", () => {
  it("names statuses as people read them", () => {
    render(<StatusBadge status="PAST_DUE" />);
    expect(screen.getByText("Past due").className).toContain("badge-bad");
  });

  it("shows the live state in words", () => {
    const { rerender } = render(<LiveIndicator state="live" />);
    expect(screen.getByRole("status").textContent).toBe("Live");
    rerender(<LiveIndicator state="reconnecting" />);
    expect(screen.getByRole("status").textContent).toBe("Reconnecting…");
  });

  it("meters expose their value", () => {
    render(<Meter label="ada: spent of monthly budget" percent={40} />);
    expect(screen.getByRole("meter", { name: "ada: spent of monthly budget" }).getAttribute("aria-valuenow")).toBe("40");
  });
});

describe("stackRows", () => {
  it("sums a report's rows per key and day exactly, biggest key first", () => {
    const from = "2026-01-01T00:00:00.000Z";
    const data = stackRows(
      [
        { bucketStart: "2026-01-01T00:00:00+00:00", key: "answer", totals: { credits: "0.1" } },
        { bucketStart: "2026-01-01T00:00:00+00:00", key: "web_search", totals: { credits: "0.2" } },
        { bucketStart: "2026-01-02T00:00:00+00:00", key: "web_search", totals: { credits: "0.1" } },
        { bucketStart: "2026-01-02T00:00:00+00:00", key: null, totals: { credits: "5" } },
        { bucketStart: "2025-12-31T00:00:00+00:00", key: "answer", totals: { credits: "9" } },
      ],
      from,
      3,
    );
    expect(data.keys).toEqual(["Other", "web_search", "answer"]);
    expect(data.totals).toEqual({ Other: "5", web_search: "0.3", answer: "0.1" });
    expect(data.values[1]).toEqual(["0.2", "0.1", "0"]);
    expect(data.days).toHaveLength(3);
  });
});
