import { afterEach } from "vitest";
import { cleanup } from "@testing-library/react";

// jsdom has no matchMedia (uPlot reads the pixel ratio with it on import) and no ResizeObserver.
if (typeof window !== "undefined" && !window.matchMedia) {
  window.matchMedia = ((query: string) => ({
    matches: false,
    media: query,
    onchange: null,
    addListener: () => {},
    removeListener: () => {},
    addEventListener: () => {},
    removeEventListener: () => {},
    dispatchEvent: () => false,
  })) as unknown as typeof window.matchMedia;
}
if (typeof globalThis.ResizeObserver === "undefined") {
  globalThis.ResizeObserver = class {
    observe() {}
    unobserve() {}
    disconnect() {}
  } as unknown as typeof ResizeObserver;
}

// jsdom draws nothing: a 2D context whose every method is a no-op lets uPlot mount.
if (typeof HTMLCanvasElement !== "undefined") {
  const noop = () => {};
  const context = new Proxy(
    { measureText: () => ({ width: 0 }), createLinearGradient: () => ({ addColorStop: noop }) } as Record<string, unknown>,
    { get: (target, key: string) => (key in target ? target[key] : noop), set: () => true },
  );
  HTMLCanvasElement.prototype.getContext = (() => context) as unknown as typeof HTMLCanvasElement.prototype.getContext;
}

if (typeof globalThis.Path2D === "undefined") {
  globalThis.Path2D = class {
    moveTo() {}
    lineTo() {}
    rect() {}
    arc() {}
    closePath() {}
    bezierCurveTo() {}
    quadraticCurveTo() {}
    addPath() {}
  } as unknown as typeof Path2D;
}

afterEach(() => cleanup());
