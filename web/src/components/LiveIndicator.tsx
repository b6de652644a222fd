import type { LiveState } from "../lib/client";

const TEXT: Record<LiveState, string> = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  offline: "Offline",
};

const TITLE: Record<LiveState, string> = {
  connecting: "Connecting to live updates",
  live: "The balance updates live as credit is spent",
  reconnecting: "Live updates were interrupted; reconnecting by itself",
  offline: "You are offline; live updates resume when you are back",
};

export function LiveIndicator({ state }: { state: LiveState }) {
  return (
    <span className={`live live-${state}`} role="status" aria-live="polite" title={TITLE[state]}>
      <span className="live-dot" aria-hidden="true" />
      {TEXT[state]}
    </span>
  );
}
