// tests/browser/registries.test.mjs - registries of other kinds in the
// console (started by tests/e2e/console_registries.t with the ECR
// stand-in): the kind is chosen from GET /kinds, the form then asks for the
// kind's own credential fields and options, the secrets are write-only (the
// edit page says they are stored and never shows them), and Test
// connection logs in through the kind (SigV4 at the stand-in). A registry
// that requires client certificates (mTLS) gets its CA, certificate and
// key files from the form, and Test connection presents the certificate.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { CONSOLE_URL, api, launch, login, shot } from "./lib.mjs";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set (run this through tests/e2e/console_registries.t)`);
  return v;
};
const MTLS = { url: env("MTLS_URL"), ca: env("MTLS_CA"), cert: env("MTLS_CERT"), key: env("MTLS_KEY") };
const ECR = { url: env("STANDIN_E_URL"), api: env("STANDIN_E_API_URL"), key: env("STANDIN_E_ACCESS_KEY_ID"),
              secret: env("STANDIN_E_SECRET_ACCESS_KEY"), region: env("STANDIN_E_REGION") };

let b;
before(async () => {
  b = await launch();
  await login(b.page, process.env.TOKEN);
});
after(async () => { await b.browser.close(); });

test("an ECR registry: the kind's fields, write-only secrets, and a connection test through its login", async () => {
  const { page } = b;
  await page.goto(`${CONSOLE_URL}/registries/new`);
  // the kinds arrive from GET /kinds after the form is drawn
  await page.locator("[data-testid=reg-kind] option[value=ecr]").waitFor({ state: "attached" });
  const kinds = await page.getByTestId("reg-kind").locator("option").allTextContents();
  for (const k of ["distribution", "harbor", "ecr", "gar"]) assert.ok(kinds.includes(k), `the kind list offers ${k}`);
  assert.equal(await page.getByTestId("kind-credentials").count(), 0, "distribution asks for no fields of its own");
  await page.locator("#reg-name").fill("ecr");
  await page.locator("#reg-url").fill(ECR.url);
  await page.getByTestId("reg-kind").selectOption("ecr");
  await page.getByTestId("cred-access_key_id").fill(ECR.key);
  await page.getByTestId("cred-secret_access_key").fill(ECR.secret);
  await page.getByTestId("cred-region").fill(ECR.region);
  assert.equal(await page.getByTestId("cred-secret_access_key").getAttribute("type"), "password", "a secret field hides what is typed");
  await page.getByTestId("opt-api_url").fill(ECR.api);
  await shot(page, "registry-form-ecr");
  const created = page.waitForRequest((r) => r.url().endsWith("/api/v1/registries") && r.method() === "POST");
  await page.getByTestId("save").click();
  const sent = (await created).postDataJSON();
  assert.deepEqual(sent.credentials, { access_key_id: ECR.key, secret_access_key: ECR.secret, region: ECR.region },
    "the form sends the kind's credentials");
  await page.waitForURL(`${CONSOLE_URL}/registries`);

  const list = (await api("GET", "/registries")).body;
  const reg = list.find((r) => r.name === "ecr");
  assert.equal(reg.kind, "ecr");
  assert.deepEqual(reg.credentials_set, ["access_key_id", "region", "secret_access_key"]);
  assert.ok(!JSON.stringify(list).includes(ECR.secret), "no answer carries the secret");

  await page.goto(`${CONSOLE_URL}/registries/${reg.id}`);
  const secret = page.getByTestId("cred-secret_access_key");
  await secret.waitFor();
  assert.equal(await secret.inputValue(), "", "the stored secret is never shown");
  assert.match(await secret.getAttribute("placeholder"), /stored/, "the field says one is stored");
  assert.equal(await page.getByTestId("opt-api_url").inputValue(), ECR.api, "the options are shown as stored");
  await page.getByTestId("registry-ping").click();
  const res = page.getByTestId("ping-result");
  await page.waitForFunction(() => document.querySelector("[data-testid=ping-result]")?.dataset.ok !== "");
  assert.equal(await res.getAttribute("data-ok"), "true", await res.innerText());
  assert.ok(!(await page.content()).includes(ECR.secret), "the page never holds the secret");
  await shot(page, "registry-edit-ecr");
  assert.deepEqual(b.problems, [], "no page error, console error or CSP violation");
});

test("an mTLS registry: CA, client certificate and key files, and a connection test that presents the certificate", async () => {
  const { page } = b;
  await page.goto(`${CONSOLE_URL}/registries/new`);
  await page.locator("#reg-name").fill("mtls");
  await page.locator("#reg-url").fill(MTLS.url);
  await page.locator("#reg-ca-file").fill(MTLS.ca);
  await page.locator("#reg-cert-file").fill(MTLS.cert);
  await page.locator("#reg-key-file").fill(MTLS.key);
  const created = page.waitForRequest((r) => r.url().endsWith("/api/v1/registries") && r.method() === "POST");
  await page.getByTestId("save").click();
  const sent = (await created).postDataJSON();
  assert.deepEqual([sent.ca_file, sent.cert_file, sent.key_file], [MTLS.ca, MTLS.cert, MTLS.key], "the form sends the three paths");
  await page.waitForURL(`${CONSOLE_URL}/registries`);
  const reg = (await api("GET", "/registries")).body.find((r) => r.name === "mtls");

  await page.goto(`${CONSOLE_URL}/registries/${reg.id}`);
  await page.locator("#reg-cert-file").waitFor();
  assert.equal(await page.locator("#reg-cert-file").inputValue(), MTLS.cert, "the edit page shows the certificate's path");
  assert.equal(await page.locator("#reg-key-file").inputValue(), MTLS.key, "and the key's");
  await page.getByTestId("registry-ping").click();
  const res = page.getByTestId("ping-result");
  await page.waitForFunction(() => document.querySelector("[data-testid=ping-result]")?.dataset.ok !== "");
  assert.equal(await res.getAttribute("data-ok"), "true", await res.innerText());

  await page.locator("#reg-cert-file").fill("");
  await page.locator("#reg-key-file").fill("");
  await page.getByTestId("save").click();
  await page.waitForURL(`${CONSOLE_URL}/registries`);
  await page.goto(`${CONSOLE_URL}/registries/${reg.id}`);
  await page.getByTestId("registry-ping").click();
  await page.waitForFunction(() => document.querySelector("[data-testid=ping-result]")?.dataset.ok !== "");
  assert.equal(await res.getAttribute("data-ok"), "false", "without the certificate the test fails");
  assert.match(await res.innerText(), /tls \(the server asked for a client certificate and none is configured/,
    "saying why");
  assert.deepEqual(b.problems, [], "no page error, console error or CSP violation");
});
