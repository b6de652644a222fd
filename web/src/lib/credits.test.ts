import { describe, expect, it } from "vitest";
import {
  addCredits,
  compareCredits,
  formatCredits,
  formatCreditsShort,
  formatMoney,
  fromMicro,
  isCredits,
  percentOf,
  priceOfCredits,
  subCredits,
  toMicro,
} from "./credits";

describe("credits arithmetic is exact", () => {
  it("parses the API's strings into micro-credits", () => {
    expect(toMicro("0.002")).toBe(2000n);
    expect(toMicro("12.5")).toBe(12_500_000n);
    expect(toMicro("-5")).toBe(-5_000_000n);
    expect(toMicro("0.000001")).toBe(1n);
    expect(() => toMicro("1e3")).toThrow();
    expect(() => toMicro("0.0000001")).toThrow();
  });

  it("adds what floating point gets wrong", () => {
    expect(0.1 + 0.2).not.toBe(0.3);
    expect(addCredits("0.1", "0.2")).toBe("0.3");
    expect(addCredits("9007199254740993", "0.000001")).toBe("9007199254740993.000001");
    expect(subCredits("100", "0.002")).toBe("99.998");
    expect(fromMicro(-1n)).toBe("-0.000001");
  });

  it("compares and takes shares", () => {
    expect(compareCredits("10", "9.999999")).toBe(1);
    expect(compareCredits("2.50", "2.5")).toBe(0);
    expect(percentOf("25", "100")).toBe(25);
    expect(percentOf("150", "100")).toBe(100);
    expect(percentOf("1", "0")).toBe(0);
  });

  it("validates user input like the API does", () => {
    expect(isCredits("500")).toBe(true);
    expect(isCredits("12.3456789")).toBe(false);
    expect(isCredits("-1")).toBe(false);
    expect(isCredits("1.5e2")).toBe(false);
  });
});

describe("formatting", () => {
  it("groups thousands and keeps every decimal by default", () => {
    expect(formatCredits("1234567.5")).toBe("1,234,567.5");
    expect(formatCredits("0.002")).toBe("0.002");
    expect(formatCredits("100")).toBe("100");
    expect(formatCredits("-3.25")).toBe("−3.25");
    expect(formatCredits("3.25", { signed: true })).toBe("+3.25");
    expect(formatCredits("3", { minDecimals: 2 })).toBe("3.00");
  });

  it("cuts, never rounds up, in the short form, and never shows 0 for a tiny amount", () => {
    expect(formatCreditsShort("99.999")).toBe("99.99");
    expect(formatCreditsShort("0.002")).toBe("0.002");
    expect(formatCreditsShort("0")).toBe("0");
  });

  it("formats money from minor units", () => {
    expect(formatMoney(500, "USD")).toBe("$5.00");
    expect(formatMoney(123456789, "usd")).toBe("$1,234,567.89");
    expect(formatMoney(1500, "JPY")).toBe("¥1,500");
    expect(formatMoney(1999, "CHF")).toBe("19.99 CHF");
    expect(formatMoney(-250, "EUR")).toBe("−€2.50");
  });

  it("prices credits rounded up, as the server charges", () => {
    expect(priceOfCredits("500", 100)).toBe(500n);
    expect(priceOfCredits("1", 99)).toBe(1n); // 0.99 minor units -> 1
    expect(priceOfCredits("0.000001", 100)).toBe(1n);
    expect(priceOfCredits("250", 250)).toBe(625n);
  });
});
