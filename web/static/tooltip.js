// One floating tooltip for the canvases. Content is built from nodes and text only.
import { setChildren } from "./dom.js";

export class Tooltip {
  constructor(node) {
    this.node = node;
  }

  /** Show ``children`` near the pointer at client coordinates (x, y). */
  show(x, y, ...children) {
    setChildren(this.node, ...children);
    this.node.hidden = false;
    const pad = 14;
    const box = this.node.getBoundingClientRect();
    let left = x + pad;
    let top = y + pad;
    if (left + box.width > window.innerWidth - 4) left = Math.max(4, x - box.width - pad);
    if (top + box.height > window.innerHeight - 4) top = Math.max(4, y - box.height - pad);
    this.node.style.left = `${left}px`;
    this.node.style.top = `${top}px`;
  }

  hide() {
    this.node.hidden = true;
  }
}
