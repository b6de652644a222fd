import { useCallback, useEffect, useId, useRef, useState, type KeyboardEvent, type ReactNode } from "react";
import { humanize } from "../lib/format";

export interface TabItem {
  id: string;
  label: string;
}

/** WAI-ARIA tabs: arrow keys, Home and End move between tabs; the panel is labelled by its tab. */
export function Tabs(props: { label: string; tabs: TabItem[]; selected: string; onSelect: (id: string) => void; children: ReactNode }) {
  const { label, tabs, selected, onSelect, children } = props;
  const base = useId();
  const refs = useRef<Record<string, HTMLButtonElement | null>>({});
  const list = useRef<HTMLDivElement>(null);
  // The row scrolls sideways on a narrow screen: bring the selected tab into it (never scrolling the page).
  useEffect(() => {
    const row = list.current;
    const tab = refs.current[selected];
    if (!row || !tab) return;
    const outer = row.getBoundingClientRect();
    const inner = tab.getBoundingClientRect();
    if (inner.left < outer.left) row.scrollLeft = Math.max(0, row.scrollLeft - (outer.left - inner.left + 16));
    else if (inner.right > outer.right) row.scrollLeft += inner.right - outer.right + 16;
  }, [selected]);
  // A row wider than the screen fades out at the edge that has more tabs beyond it (the scroll hint).
  const [more, setMore] = useState({ left: false, right: false });
  const measure = useCallback(() => {
    const row = list.current;
    if (!row) return;
    const left = row.scrollLeft > 1;
    const right = row.scrollLeft + row.clientWidth < row.scrollWidth - 1;
    setMore((was) => (was.left === left && was.right === right ? was : { left, right }));
  }, []);
  useEffect(() => {
    const row = list.current;
    if (!row) return;
    measure();
    const observer = new ResizeObserver(measure);
    observer.observe(row);
    row.addEventListener("scroll", measure, { passive: true });
    return () => {
      observer.disconnect();
      row.removeEventListener("scroll", measure);
    };
  }, [measure, tabs.length]);
  const onKeyDown = (event: KeyboardEvent<HTMLDivElement>) => {
    const index = tabs.findIndex((t) => t.id === selected);
    let next = -1;
    if (event.key === "ArrowRight") next = (index + 1) % tabs.length;
    else if (event.key === "ArrowLeft") next = (index - 1 + tabs.length) % tabs.length;
    else if (event.key === "Home") next = 0;
    else if (event.key === "End") next = tabs.length - 1;
    if (next < 0) return;
    event.preventDefault();
    const id = tabs[next].id;
    onSelect(id);
    refs.current[id]?.focus();
  };
  return (
    <>
      <div className={`tabs-wrap${more.left ? " more-left" : ""}${more.right ? " more-right" : ""}`}>
        <div className="tabs" role="tablist" aria-label={label} onKeyDown={onKeyDown} ref={list}>
          {tabs.map((tab) => (
            <button
              key={tab.id}
              ref={(el) => {
                refs.current[tab.id] = el;
              }}
              type="button"
              role="tab"
              id={`${base}-tab-${tab.id}`}
              aria-selected={tab.id === selected}
              aria-controls={`${base}-panel`}
              tabIndex={tab.id === selected ? 0 : -1}
              className="tab"
              onClick={() => onSelect(tab.id)}
            >
              {tab.label}
            </button>
          ))}
        </div>
      </div>
      <div className="tabpanel" role="tabpanel" id={`${base}-panel`} aria-labelledby={`${base}-tab-${selected}`} tabIndex={0}>
        {children}
      </div>
    </>
  );
}

const TONE: Record<string, string> = {
  SUCCEEDED: "good",
  ACTIVE: "good",
  PENDING: "warn",
  INCOMPLETE: "warn",
  RETRY_SCHEDULED: "warn",
  PAST_DUE: "bad",
  FAILED: "bad",
  CANCELED: "muted",
  OFF: "muted",
  CAP_REACHED: "warn",
};

export function StatusBadge({ status, label }: { status: string; label?: string }) {
  return <span className={`badge badge-${TONE[status] ?? "muted"}`}>{label ?? humanize(status)}</span>;
}

export function Notice({ tone, children, title }: { tone: "error" | "info" | "success" | "warn"; children: ReactNode; title?: string }) {
  return (
    <div className={`notice notice-${tone}`} role={tone === "error" ? "alert" : "status"}>
      {title ? <strong className="notice-title">{title}</strong> : null}
      <div>{children}</div>
    </div>
  );
}

export function Loading({ label = "Loading…" }: { label?: string }) {
  return (
    <div className="loading" role="status" aria-live="polite">
      <span className="spinner" aria-hidden="true" />
      {label}
    </div>
  );
}

export function Empty({ title, children }: { title: string; children?: ReactNode }) {
  return (
    <div className="empty">
      <p className="empty-title">{title}</p>
      {children ? <p className="empty-body">{children}</p> : null}
    </div>
  );
}

export function Section(props: { title: string; actions?: ReactNode; children: ReactNode; className?: string; headingLevel?: 2 | 3 }) {
  const id = useId();
  const Heading = props.headingLevel === 3 ? "h3" : "h2";
  return (
    <section className={`card ${props.className ?? ""}`} aria-labelledby={id}>
      <header className="card-header">
        <Heading id={id} className="card-title">
          {props.title}
        </Heading>
        {props.actions ? <div className="card-actions">{props.actions}</div> : null}
      </header>
      {props.children}
    </section>
  );
}

/** A native modal dialog: focus stays inside, Escape closes it. */
export function Dialog(props: { title: string; open: boolean; onClose: () => void; children: ReactNode }) {
  const ref = useRef<HTMLDialogElement>(null);
  const id = useId();
  useEffect(() => {
    const dialog = ref.current;
    if (!dialog) return;
    if (props.open && !dialog.open) {
      if (typeof dialog.showModal === "function") dialog.showModal();
      else dialog.setAttribute("open", "");
    } else if (!props.open && dialog.open) {
      if (typeof dialog.close === "function") dialog.close();
      else dialog.removeAttribute("open");
    }
  }, [props.open]);
  return (
    <dialog
      ref={ref}
      className="dialog"
      aria-labelledby={id}
      onClose={props.onClose}
      onCancel={(e) => {
        e.preventDefault();
        props.onClose();
      }}
    >
      {props.open ? (
        <>
          <header className="dialog-header">
            <h2 id={id}>{props.title}</h2>
            <button type="button" className="icon-button" aria-label="Close" onClick={props.onClose}>
              ×
            </button>
          </header>
          <div className="dialog-body">{props.children}</div>
        </>
      ) : null}
    </dialog>
  );
}

/** A horizontal bar of part over whole, with its numbers as text for everyone. */
export function Meter({ label, percent, tone = "accent" }: { label: string; percent: number; tone?: "accent" | "warn" | "bad" }) {
  return (
    <div className="meter" role="meter" aria-label={label} aria-valuemin={0} aria-valuemax={100} aria-valuenow={percent}>
      <div className={`meter-fill meter-${tone}`} style={{ width: `${percent}%` }} />
    </div>
  );
}
