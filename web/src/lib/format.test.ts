import { describe, expect, it } from "vitest";
import { forecastHasEnoughHistory, forecastSentence, last30Days, relativeFromNow } from "./format";

const now = Date.parse("2026-01-15T12:00:00Z");

describe("dates as people say them", () => {
  it("says how far off an expiry is, to the nearest day from a day on", () => {
    const at = (ms: number) => new Date(now + ms).toISOString();
    const H = 3_600_000;
    const D = 24 * H;
    // The case a person saw: 2 days 23 hours left is "in 3 days", not "in 2 days".
    expect(relativeFromNow(at(2 * D + 23 * H), now)).toBe("in 3 days");
    expect(relativeFromNow(at(3 * D + H), now)).toBe("in 3 days");
    expect(relativeFromNow(at(2 * D + 12 * H - 1), now)).toBe("in 2 days");
    expect(relativeFromNow(at(2 * D + 12 * H), now)).toBe("in 3 days");
    expect(relativeFromNow(at(D), now)).toBe("in 1 day");
    expect(relativeFromNow(at(D + 12 * H - 1), now)).toBe("in 1 day");
    expect(relativeFromNow(at(D + 12 * H), now)).toBe("in 2 days");
    // Below a day: hours, to the nearest hour.
    expect(relativeFromNow(at(D - 1), now)).toBe("in 24 hours");
    expect(relativeFromNow(at(5 * H + 29 * 60_000), now)).toBe("in 5 hours");
    expect(relativeFromNow(at(5 * H + 30 * 60_000), now)).toBe("in 6 hours");
    expect(relativeFromNow(at(H), now)).toBe("in 1 hour");
    expect(relativeFromNow(at(H + 29 * 60_000), now)).toBe("in 1 hour");
    // Below an hour, and past.
    expect(relativeFromNow(at(H - 1), now)).toBe("in less than an hour");
    expect(relativeFromNow(at(1), now)).toBe("in less than an hour");
    expect(relativeFromNow(at(0), now)).toBe("now");
  });

  it("shows a forecast only once its rate covers a day of usage", () => {
    expect(forecastHasEnoughHistory({ hours: 1 })).toBe(false);
    expect(forecastHasEnoughHistory({ hours: 23 })).toBe(false);
    expect(forecastHasEnoughHistory({ hours: 24 })).toBe(true);
    expect(forecastHasEnoughHistory({ hours: 168 })).toBe(true);
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
