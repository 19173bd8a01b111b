// html.js - the console's one view primitive: htm bound to Preact's h.
// Text interpolated into html`` is always set as text, never parsed as HTML;
// nothing in the console uses dangerouslySetInnerHTML.
import { h, render } from "preact";
import htm from "htm";

export const html = htm.bind(h);
export { h, render };
