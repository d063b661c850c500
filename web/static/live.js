// Live refresh: a live view (5 min, 1 h, 24 h ending now) reloads every `refresh` seconds
// (on by default). It pauses while the user drags on the timeline, while a range is
// selected and once the view is zoomed or panned (a fixed range); the pill in the header
// says which, with one click back to live. Data is marked stale when the last good load is
// older than STALE_FACTOR refresh periods (or STALE_MIN_S), or when the last load failed.
import { $, el, fmtDur, fmtTime, setChildren } from "./dom.js";

const STALE_FACTOR = 3;
const STALE_MIN_S = 30;
const OFF_STALE_S = 60;      // a live view that does not refresh is stale after this long

export class LiveRefresh {
  /**
   * @param store     the page state (state.js Store)
   * @param handlers  refresh() -> Promise (reloads what a live view shows),
   *                  dragging() -> bool (the user is dragging on the timeline),
   *                  resume() (back to a live view: clears the selection)
   */
  constructor(store, handlers) {
    this.store = store;
    this.handlers = handlers;
    this.timer = null;
    this.period = 0;
    this.lastOk = null;
    this.failed = false;
    this.busy = false;
    this.wasLive = null;
    setInterval(() => this.render(), 1000);
  }

  /** Call when the state changes: (re)arms the timer for its period. */
  update(s) {
    if (s.live) this.wasLive = s.live;
    if (this.period !== s.refresh) {
      clearInterval(this.timer);
      this.timer = null;
      this.period = s.refresh;
      if (s.refresh > 0) this.timer = setInterval(() => this.tick(), s.refresh * 1000);
    }
    this.render();
  }

  /** Why a tick would not reload now, or null. */
  pauseReason(s = this.store.get()) {
    if (!s.live) return this.wasLive ? "zoomed" : "fixed";
    if (this.handlers.dragging()) return "selecting";
    if (s.sel) return "selected";
    if (document.hidden) return "hidden";
    return null;
  }

  async tick() {
    if (this.busy || this.pauseReason()) {
      this.render();
      return;
    }
    this.busy = true;
    try {
      await this.handlers.refresh();
    } finally {
      this.busy = false;
      this.render();
    }
  }

  /** The outcome of a load of the timeline (refresh or not). */
  loaded(ok) {
    if (ok) this.lastOk = Date.now() / 1000;
    this.failed = !ok;
    this.render();
  }

  stale(s, now) {
    if (this.failed) return true;
    if (!s.live || this.lastOk === null) return false;
    const limit = s.refresh > 0 ? Math.max(STALE_MIN_S, STALE_FACTOR * s.refresh) : OFF_STALE_S;
    return now - this.lastOk > limit;
  }

  render() {
    const node = $("live-status");
    const s = this.store.get();
    const now = Date.now() / 1000;
    const reason = this.pauseReason(s);
    const stale = this.stale(s, now);
    const ago = this.lastOk === null ? "" : `updated ${fmtDur(Math.max(0, now - this.lastOk))} ago`;
    let state;
    let text;
    let action = null;
    if (reason === "fixed") {
      state = "fixed";
      text = "Fixed range";
      action = "Go live";
    } else if (reason === "zoomed") {
      state = "paused";
      text = "Paused: zoomed or panned";
      action = "Back to live";
    } else if (reason === "selected") {
      state = "paused";
      text = "Paused: a range is selected";
      action = "Resume live";
    } else if (reason === "selecting") {
      state = "paused";
      text = "Paused while you select";
    } else if (!(s.refresh > 0)) {
      state = "off";
      text = this.lastOk === null ? "Refresh off" : `Refresh off · as of ${fmtTime(this.lastOk)}`;
    } else {
      state = "live";
      text = reason === "hidden" ? "Live (paused in a background tab)" : `Live · every ${s.refresh} s${ago ? ` · ${ago}` : ""}`;
    }
    if (stale) text = this.failed ? `Stale: the agent did not answer${ago ? ` · ${ago}` : ""}` : `Stale · ${ago}`;
    node.dataset.state = state;
    node.dataset.stale = String(stale);
    document.body.dataset.stale = String(stale);
    const key = JSON.stringify([state, text, action]);
    if (key === this.drawn) return;
    this.drawn = key;
    setChildren(node, el("span", { class: "live-dot", "aria-hidden": "true" }), el("span", { class: "live-text" }, text),
      action ? el("button", { type: "button", class: "btn small", id: "live-resume", onclick: () => this.resume() }, action) : null);
  }

  resume() {
    this.handlers.resume(this.wasLive || "1h");
  }
}
