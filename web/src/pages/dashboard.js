// pages/dashboard.js - placeholder: the page is being written.
import { html } from "../html.js";
export function Dashboard() { return html`<section><h1>Dashboard</h1><p>Coming soon.</p></section>`; }
