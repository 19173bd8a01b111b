// pages/functions.js - placeholder: the page is being written.
import { html } from "../html.js";
export function FunctionsList() { return html`<section><h1>FunctionsList</h1><p>Coming soon.</p></section>`; }
export function FunctionEditor() { return html`<section><h1>FunctionEditor</h1><p>Coming soon.</p></section>`; }
