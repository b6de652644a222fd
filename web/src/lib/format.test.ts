import { describe, expect, it } from "vitest";
import { forecastSentence, last30Days, relativeFromNow } from "./format";

const now = Date.parse("2026-01-15T12:00:00Z");

describe("dates as people say them", () => {
  it("says how far off an expiry is", () => {
    expect(relativeFromNow("2026-01-18T13:00:00Z", now)).toBe("in 3 days");
    expect(relativeFromNow("2026-01-16T13:00:00Z", now)).toBe("tomorrow");
    expect(relativeFromNow("2026-01-15T17:30:00Z", now)).toBe("in 5 hours");
  });

  it("words the forecast", () => {
    expect(forecastSentence("2026-01-27T13:00:00Z", now)).toBe("Lasts about 12 days at the current rate.");
    expect(forecastSentence("2026-01-15T15:00:00Z", now)).toBe("Lasts about 3 hours at the current rate.");
    expect(forecastSentence(null, now)).toMatch(/years/);
  });

  it("asks for 30 whole UTC days", () => {
    expect(last30Days(new Date(now))).toEqual({ from: "2025-12-17T00:00:00.000Z", to: "2026-01-16T00:00:00.000Z" });
  });
});
