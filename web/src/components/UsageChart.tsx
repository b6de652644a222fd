import { useEffect, useMemo, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { addCredits, compareCredits, creditsToNumber, formatCredits } from "../lib/credits";
import { PALETTE, colorSlots } from "../lib/colors";
import { formatDay } from "../lib/format";

export interface ReportRow {
  bucketStart: string;
  key?: string | null;
  totals: { credits: string };
}


export interface Stacked {
  days: string[];
  keys: string[];
  /** values[k][d]: credits of key k on day d (exact strings) */
  values: string[][];
  totals: Record<string, string>;
}

/** Rows of a DAY report into one column per day and one series per key, biggest key first (exact sums). */
export function stackRows(rows: ReportRow[], from: string, days = 30, label: (key: string | null) => string = (k) => k ?? "Other"): Stacked {
  const start = Date.parse(from);
  const dayList = Array.from({ length: days }, (_, i) => new Date(start + i * 86_400_000).toISOString());
  const totals: Record<string, string> = {};
  const cells = new Map<string, Map<number, string>>();
  for (const row of rows) {
    const key = label(row.key ?? null);
    const index = Math.floor((Date.parse(row.bucketStart) - start) / 86_400_000);
    if (index < 0 || index >= days) continue;
    totals[key] = addCredits(totals[key] ?? "0", row.totals.credits);
    const byDay = cells.get(key) ?? new Map<number, string>();
    byDay.set(index, addCredits(byDay.get(index) ?? "0", row.totals.credits));
    cells.set(key, byDay);
  }
  const keys = Object.keys(totals).sort((a, b) => compareCredits(totals[b], totals[a]) || a.localeCompare(b));
  const values = keys.map((key) => dayList.map((_, d) => cells.get(key)?.get(d) ?? "0"));
  return { days: dayList, keys, values, totals };
}

/** Stacked daily bars (uPlot): each series is drawn as the running sum up to it, the tallest first. */
export function UsageChart({ data, label }: { data: Stacked; label: string }) {
  const host = useRef<HTMLDivElement>(null);
  const slots = useMemo(() => colorSlots(data.keys), [data.keys]);
  const aligned = useMemo(() => {
    const xs = data.days.map((d) => Date.parse(d) / 1000);
    const running = data.days.map(() => 0);
    const stacked: number[][] = [];
    for (const series of data.values) {
      stacked.push(series.map((v, i) => (running[i] += creditsToNumber(v))));
    }
    return [xs, ...stacked.reverse()] as uPlot.AlignedData;
  }, [data]);

  useEffect(() => {
    const el = host.current;
    if (!el || data.keys.length === 0) return;
    const width = Math.max(280, el.clientWidth || 600);
    const bars = uPlot.paths.bars!({ size: [0.7, 40], align: 0 });
    const keysTopFirst = [...data.keys].reverse();
    const opts: uPlot.Options = {
      width,
      height: 220,
      legend: { show: false },
      cursor: { show: true, points: { show: false }, drag: { x: false, y: false } },
      scales: { x: { time: true } },
      axes: [
        {
          stroke: "#64748b",
          grid: { show: false },
          ticks: { show: false },
          values: (_u, splits) => splits.map((s) => formatDay(new Date(s * 1000).toISOString())),
          space: 60,
        },
        { stroke: "#64748b", grid: { stroke: "#e2e8f0", width: 1 }, ticks: { show: false }, size: 50 },
      ],
      series: [
        {},
        ...keysTopFirst.map((key) => {
          const color = PALETTE[slots[key]];
          return { label: key, stroke: color, fill: color, width: 0, paths: bars, points: { show: false } };
        }),
      ],
    };
    const plot = new uPlot(opts, aligned, el);
    const resize = new ResizeObserver(() => plot.setSize({ width: Math.max(280, el.clientWidth), height: 220 }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      plot.destroy();
    };
  }, [aligned, data.keys, slots]);

  return (
    <figure className="chart">
      <div ref={host} className="chart-canvas" role="img" aria-label={label} />
      <figcaption className="legend">
        <ul>
          {data.keys.map((key) => (
            <li key={key}>
              <span className={`swatch swatch-${slots[key]}`} aria-hidden="true" />
              <span className="legend-key">{key}</span>
              <span className="legend-value">{formatCredits(data.totals[key], { maxDecimals: 3 })}</span>
            </li>
          ))}
        </ul>
      </figcaption>
    </figure>
  );
}
