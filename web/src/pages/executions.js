// pages/executions.js - placeholder: the page is being written.
import { html } from "../html.js";
export function Executions() { return html`<section><h1>Executions</h1><p>Coming soon.</p></section>`; }
export function ExecutionDetail() { return html`<section><h1>ExecutionDetail</h1><p>Coming soon.</p></section>`; }
