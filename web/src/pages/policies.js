// pages/policies.js - placeholder: the page is being written.
import { html } from "../html.js";
export function Policies() { return html`<section><h1>Policies</h1><p>Coming soon.</p></section>`; }
export function PolicyForm() { return html`<section><h1>PolicyForm</h1><p>Coming soon.</p></section>`; }
