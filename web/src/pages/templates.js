// pages/templates.js - placeholder: the page is being written.
import { html } from "../html.js";
export function TemplatesList() { return html`<section><h1>TemplatesList</h1><p>Coming soon.</p></section>`; }
export function TemplateComposer() { return html`<section><h1>TemplateComposer</h1><p>Coming soon.</p></section>`; }
