// pages/login.js - the login page: takes an API token, checks it against
// the server, and keeps it in sessionStorage.
import { useState } from "preact/hooks";
import { html } from "../html.js";
import { get, setToken } from "../api.js";
import { navigate } from "../router.js";

// The login form; query.next is where to go once the token is accepted.
export function Login({ query }) {
  const [value, setValue] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await get("/policies?page_size=1", { token: value.trim() });
      setToken(value.trim());
      const next = query.next && query.next.startsWith("/") && !query.next.startsWith("//") ? query.next : "/";
      navigate(next, { replace: true });
    } catch (err) {
      setError(err.status === 401 ? "That token is not valid." : err.message);
    } finally {
      setBusy(false);
    }
  };
  return html`
    <section class="login">
      <h1>replica</h1>
      <form onSubmit=${submit}>
        <label for="token">API token</label>
        <input id="token" name="token" type="password" autocomplete="off" value=${value}
               placeholder="rpl_…" onInput=${(e) => setValue(e.target.value)} required />
        <p class="help">The token <code>replica serve</code> printed at its first start, or one made
          with <code>replica token create</code>. It is kept for this tab only.</p>
        ${error && html`<p class="error" role="alert">${error}</p>`}
        <button type="submit" class="primary" disabled=${busy}>Log in</button>
      </form>
    </section>`;
}
