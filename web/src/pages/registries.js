// pages/registries.js - placeholder: the page is being written.
import { html } from "../html.js";
export function Registries() { return html`<section><h1>Registries</h1><p>Coming soon.</p></section>`; }
