// Drives the holdpoint-bot review queue in headless Chromium. Run by
// bot/tests/web_queue.rs, which starts the bot, submits the requests named
// in the config file (argv[2]) and checks what reached the runner afterwards.
//
// Talks to the Rust test on stdout ("HOLDPOINT NEED late" asks for a
// request submitted while the page is open; the answer arrives on stdin as
// "late ID"), and ends with "HOLDPOINT RESULT {json}". Progress and failures
// go to stderr.

import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import readline from 'node:readline';

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const started = Date.now();
const log = (...a) => console.error(`[web-queue +${Date.now() - started}ms]`, ...a);

function check(cond, what) {
  if (!cond) throw new Error('expected: ' + what);
}

// Lines from the Rust test.
const input = readline.createInterface({ input: process.stdin });
const lines = [];
const waiters = [];
input.on('line', (l) => {
  const w = waiters.shift();
  if (w) w(l);
  else lines.push(l);
});
function nextLine(ms) {
  if (lines.length) return Promise.resolve(lines.shift());
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no answer from the test')), ms);
    waiters.push((l) => {
      clearTimeout(t);
      resolve(l);
    });
  });
}
async function ask(what) {
  process.stdout.write(`HOLDPOINT NEED ${what}\n`);
  return nextLine(20000);
}

const result = { ok: false, timings: {} };
const dialogs = [];
const pageErrors = [];
const cspViolations = [];
// Requests the page fetched whole (GET /api/requests/ID).
const wholeFetches = [];

function watch(page) {
  page.on('dialog', (d) => {
    dialogs.push(`${d.type()}: ${d.message()}`);
    d.dismiss().catch(() => {});
  });
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('request', (r) => {
    const m = new URL(r.url()).pathname.match(/^\/api\/requests\/([0-9a-f]{32})$/);
    if (m) wholeFetches.push(m[1]);
  });
  page.on('console', (m) => {
    if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
  });
}

mkdirSync(cfg.userDataDir, { recursive: true });
const context = await chromium.launchPersistentContext(cfg.userDataDir, {
  executablePath: cfg.chromium,
  headless: true,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
context.setDefaultTimeout(10000);
context.on('page', watch);
context.pages().forEach(watch);

try {
  const page = context.pages()[0] || (await context.newPage());
  const card = (id) => page.locator(`#pending article.card[data-id="${id}"]`);

  // 0. A link previewer (a chat's unfurler, a mail scanner) fetches the
  // link before the person: that logs nobody in and spends nothing.
  const preview = await context.request.get(cfg.login, { maxRedirects: 0 });
  check(preview.status() === 200, `a previewer's fetch answers 200, not ${preview.status()}`);
  check(!('set-cookie' in preview.headers()), 'a previewer gets no session');
  check((await context.cookies(cfg.base)).length === 0, 'and the browser holds none');

  // 1. The login link shows whom it logs in as; its button logs in, then
  // the queue shows with the headers.
  let t = Date.now();
  const queueResponse = page.waitForResponse((r) => r.url() === cfg.base + '/' && r.request().method() === 'GET');
  const login = await page.goto(cfg.login);
  check(login.status() === 200, `the login link answers 200, not ${login.status()}`);
  check((await page.locator('body').innerText()).includes('web:local'), 'the page says whom the link logs in as');
  check((await context.cookies(cfg.base)).length === 0, 'opening the link logs nobody in');
  await page.locator('form button[type=submit]').click();
  const main = await queueResponse;
  await page.waitForURL(cfg.base + '/');
  check(main.status() === 200, 'the queue answers 200 once logged in');
  const headers = main.headers();
  check(headers['content-security-policy'] === cfg.csp, `CSP header is exact: ${headers['content-security-policy']}`);
  check(headers['x-content-type-options'] === 'nosniff', 'nosniff');
  check(headers['referrer-policy'] === 'no-referrer', 'no-referrer');
  check(headers['cache-control'] === 'no-store', 'no-store');
  const cookies = await context.cookies(cfg.base);
  const session = cookies.find((c) => c.name === 'holdpoint_session');
  check(session && session.httpOnly && session.sameSite === 'Strict' && session.path === '/', 'an HttpOnly, SameSite=Strict session cookie');
  const scriptVisible = await page.evaluate(() => document.cookie);
  check(!scriptVisible.includes('holdpoint_session'), 'the session cookie is hidden from scripts');
  result.timings.login_ms = Date.now() - t;
  log('logged in');

  // 2. The same link a second time is refused.
  const second = await context.newPage();
  const again = await second.goto(cfg.login);
  check(again.status() === 410, `a used link answers 410, not ${again.status()}`);
  const againText = await second.locator('body').innerText();
  check(/already used/.test(againText), 'the page says the link was used');
  check(againText.includes('holdpoint-bot login-link'), 'the page says how to get another');
  check((await second.locator('#pending').count()) === 0, 'no queue behind a used link');
  await second.close();
  log('second use refused');

  // A marker that a reload would lose.
  await page.evaluate(() => {
    window.holdpointMarker = 'no reload';
  });

  // 3. The pending requests, live.
  t = Date.now();
  for (const id of [cfg.normal.id, cfg.hostile.id, cfg.foreign.id, cfg.critical.id]) {
    await card(id).waitFor();
  }
  result.timings.cards_ms = Date.now() - t;
  await page.locator('#conn.conn-live').waitFor({ timeout: 5000 });
  check((await page.locator('#pending-count').innerText()) === '4', 'the count says 4');

  // 4. Rules and reasons.
  const normalRules = await card(cfg.normal.id).locator('.rules').innerText();
  for (const rule of cfg.normal.rules) check(normalRules.includes(rule), `rule ${rule} is shown`);
  for (const reason of cfg.normal.reasons) check(normalRules.includes(reason), `reason "${reason}" is shown`);
  log('rules shown:', cfg.normal.rules.join(', '));

  // 5. The hostile command renders as text.
  const h = card(cfg.hostile.id);
  // The listing cut this long command; the card loads it whole, and only
  // then offers to approve it.
  await h.locator('.warn.partial').waitFor({ state: 'detached', timeout: 5000 });
  check(wholeFetches.includes(cfg.hostile.id), 'the card fetched the cut command whole');
  check(!wholeFetches.includes(cfg.normal.id), 'a short command is not fetched again');
  check(!(await h.locator('.actions button.approve').isDisabled()), 'approve is offered once the whole command is there');
  const pre = h.locator('pre.cmd');
  const shown = await pre.textContent();
  check(shown.includes("'<img src=x onerror=alert(1)>'"), 'the <img> markup shows as text');
  check(shown.includes('</pre><b>\u2705 safe</b>'), 'the </pre><b> markup shows as text');
  check((await page.locator('img').count()) === 0, 'no <img> element anywhere on the page');
  check((await h.locator('b, script, iframe, svg').count()) === 0, 'no injected element in the card');
  check(!shown.includes('\u202E') && !shown.includes('\u200B'), 'no raw U+202E or U+200B in the command');
  const tokens = await h.locator('pre.cmd .cc').allTextContents();
  check(tokens.includes('\u27E8U+202E\u27E9'), 'U+202E is shown as a token');
  check(tokens.includes('\u27E8U+200B\u27E9'), 'U+200B is shown as a token');
  check(await h.locator('pre.cmd .cc').first().isVisible(), 'the tokens are visible');
  check(await h.locator('.hidden-chars').isVisible(), 'the card warns about hidden characters');
  check((await h.locator('.badge.lines').textContent()) === `${cfg.hostile.lines} lines`, 'the line count is shown');
  const lines = await pre.locator('.ln').allTextContents();
  check(lines.length >= 2 && lines[1].startsWith('# \u2705 approved'), 'the fake "approved" text is on its own numbered line of the command');
  check(shown.length < 3000 && !shown.includes('rm -rf /'), 'the long command is collapsed');
  const toggle = h.locator('button.toggle', { hasText: 'Show all' });
  check((await toggle.innerText()).includes(cfg.hostile.chars.toLocaleString('en-US')), 'the toggle says how many characters there are');
  const part = h.locator('.rules .part-text', { hasText: cfg.hostile.part }).first();
  check(await part.isVisible(), 'the rule part is visible without expanding');
  check((await part.textContent()) === cfg.hostile.part, 'the rule part is shown exactly');
  const partBox = await part.boundingBox();
  const preBox = await pre.boundingBox();
  check(partBox && preBox && partBox.y < preBox.y, 'the rule part is above the command');
  const partTokens = await h.locator('.rules .cc').allTextContents();
  check(partTokens.includes('\u27E8U+202E\u27E9'), 'hidden characters in a rule part are visible too');
  check((await h.locator('.rules').innerText()).includes('<script>alert(3)</script>'), 'a hostile reason shows as text');
  check((await h.locator('.ann-title').innerText()).includes('<img src=x onerror=alert(2)>'), 'a hostile annotation title shows as text');
  check((await h.locator('.annotations .cc').allTextContents()).includes('\u27E8U+202E\u27E9'), 'hidden characters in annotations are visible');
  if (process.env.HOLDPOINT_SCREENSHOT) {
    // For people: HOLDPOINT_SCREENSHOT=/tmp/queue.png saves how the queue looks.
    await page.screenshot({ path: process.env.HOLDPOINT_SCREENSHOT, fullPage: true });
  }
  await toggle.click();
  const full = await pre.textContent();
  check(full.includes('rm -rf /') && full.length > 100000, 'the toggle shows the whole command');
  await h.locator('button.toggle', { hasText: 'Show only' }).click();
  check(!(await pre.textContent()).includes('rm -rf /'), 'and collapses it again');
  check(dialogs.length === 0, 'no dialog opened: ' + dialogs.join('; '));
  check(await page.evaluate(() => typeof window.holdpointMarker === 'string'), 'the page was not reloaded');
  log('hostile command rendered as text');

  // 6. A request submitted now appears without a reload.
  t = Date.now();
  const lateAnswer = await ask('late');
  const lateId = lateAnswer.replace(/^late /, '');
  await card(lateId).waitFor({ timeout: 8000 });
  result.timings.late_request_ms = Date.now() - t;
  log(`a new request appeared after ${result.timings.late_request_ms} ms`);
  // It is this reviewer's own agent's: marked, and their approval refused.
  const mine = card(lateId);
  check((await mine.locator('.badge.mine').textContent()) === 'your request', 'the requester sees their own request marked');
  await mine.locator('.actions button.approve').click();
  await mine.locator('.card-msg', { hasText: 'someone else must approve it' }).waitFor({ timeout: 5000 });
  check((await mine.count()) === 1, 'the requester cannot approve their own request');
  log('own request marked and its self-approval refused');

  // 7. Deny the hostile request with a reason.
  await h.locator('.actions button.deny').click();
  const reason = h.locator('input.reason-input');
  await reason.waitFor({ state: 'visible' });
  await reason.fill(cfg.denyReason);
  await h.locator('form.deny-form button[type=submit]').click();
  await h.waitFor({ state: 'detached', timeout: 5000 });
  const denied = page.locator(`#recent .row[data-id="${cfg.hostile.id}"]`);
  await denied.waitFor();
  const deniedText = await denied.textContent();
  check(deniedText.includes('denied') && deniedText.includes('web:local'), 'the decision shows in recent decisions');
  check(deniedText.includes('not today: <b>no</b>'), 'the reason shows as text');
  check((await denied.locator('b').count()) === 0, 'no markup from the reason');
  log('denied with a reason');

  // 8. Approve a request that is not critical: one click.
  const n = card(cfg.normal.id);
  await n.locator('.actions button.approve').click();
  await n.waitFor({ state: 'detached', timeout: 5000 });
  log('approved');

  // 9. A critical request asks before approving.
  const c = card(cfg.critical.id);
  await c.locator('.actions button.approve').click();
  await c.locator('.confirm').waitFor({ state: 'visible' });
  await page.waitForTimeout(300);
  check((await c.count()) === 1, 'a critical request is not approved by the first click');
  await c.locator('.confirm button.approve').click();
  await c.waitFor({ state: 'detached', timeout: 5000 });
  log('critical request approved after confirming');

  // 10. Someone else approves: the card goes away without a reload.
  const f = card(cfg.foreign.id);
  check((await f.count()) === 1, 'the request is still waiting');
  t = Date.now();
  execFileSync(cfg.botBin, ['approve', cfg.foreign.id, '--reason', 'fine from the terminal'], {
    env: { ...process.env, ...cfg.botEnv },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  result.timings.cli_approve_ms = Date.now() - t;
  await f.waitFor({ state: 'detached', timeout: 8000 });
  result.timings.foreign_decision_ms = Date.now() - t;
  const foreignRow = await page.locator(`#recent .row[data-id="${cfg.foreign.id}"]`).textContent();
  check(foreignRow.includes('approved') && foreignRow.includes('cli:tester'), 'recent decisions say who approved it');
  check((await page.locator('.notice').allTextContents()).some((x) => x.includes('cli:tester')), 'a notice says someone else decided');
  check(await page.evaluate(() => typeof window.holdpointMarker === 'string'), 'the page was not reloaded');
  log(`a decision made by the CLI removed the card after ${result.timings.foreign_decision_ms} ms`);

  // 11. Someone denies the requester's own request: they are told.
  execFileSync(cfg.botBin, ['deny', lateId, '--reason', 'not on a Friday'], {
    env: { ...process.env, ...cfg.botEnv },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  await card(lateId).waitFor({ state: 'detached', timeout: 8000 });
  const told = (await page.locator('.notice').allTextContents()).find((x) => x.includes("Your agent's request"));
  check(told && told.includes('denied') && told.includes('cli:tester') && told.includes('not on a Friday'),
    'the requester hears who denied their request and why: ' + told);
  log('the requester was told the outcome');

  if (process.env.HOLDPOINT_SCREENSHOT) {
    await page.screenshot({ path: process.env.HOLDPOINT_SCREENSHOT.replace(/(\.png)?$/, '-after.png'), fullPage: true });
  }

  // 12. The audit view: search, filter, page, export, the digest and its
  // charts; the hostile command is inert text there too.
  await page.goto(cfg.base + '/audit');
  await page.locator('#rows tr').first().waitFor();
  await page.selectOption('select[name=outcome]', 'denied');
  await page.locator('#search button[type=submit]').click();
  // The unfiltered list shows the denial too: wait for the filtered one.
  await page.waitForFunction(() => {
    const k = [...document.querySelectorAll('#rows td.kind')].map((x) => x.textContent);
    return k.length > 0 && k.every((x) => x === 'denied');
  }, null, { timeout: 8000 }).catch(() => {});
  const deniedRow = page.locator(`#rows tr`, { hasText: 'not today' });
  await deniedRow.first().waitFor();
  const kinds = await page.locator('#rows td.kind').allTextContents();
  check(kinds.length === 2 && kinds.every((k) => k === 'denied'), 'only the two denials are listed: ' + kinds.join(', '));
  await page.fill('input[name=q]', 'onerror=alert(1)');
  await page.locator('#search button[type=submit]').click();
  await page.waitForFunction(() => document.querySelectorAll('#rows tr').length === 1);
  const hostileCell = await page.locator('#rows tr td.cmd').first().textContent();
  check(hostileCell.includes("'<img src=x onerror=alert(1)>'"), 'the hostile command shows as text');
  check((await page.locator('img:not(.chart)').count()) === 0, 'no <img> element from the log');
  check((await page.locator('#rows b, #rows script').count()) === 0, 'no markup from the log');
  const csvHref = await page.locator('#export-csv').getAttribute('href');
  check(csvHref.includes('outcome=denied') && csvHref.includes('format=csv'), 'the export link carries the filters: ' + csvHref);
  const csv = await context.request.get(cfg.base + csvHref);
  check(csv.status() === 200 && /attachment/.test(csv.headers()['content-disposition'] || ''), 'the CSV export downloads');
  const csvText = await csv.text();
  check(csvText.startsWith('seq,at,kind') && csvText.includes(cfg.hostile.id), 'the CSV has the filtered row');
  check(!csvText.includes(lateId), 'and not the denial the filters leave out');
  const json = await context.request.get(cfg.base + (await page.locator('#export-json').getAttribute('href')));
  const exported = await json.json();
  check(Array.isArray(exported) && exported.length === 1 && exported[0].request_id === cfg.hostile.id, 'the JSON export has the filtered row');
  // Pages through the log, newest first: on the page with its Older
  // button, and through the API.
  await page.goto(cfg.base + '/audit?limit=2');
  await page.waitForFunction(() => document.querySelectorAll('#rows tr').length === 2);
  const firstSeqs = await page.locator('#rows tr').evaluateAll((trs) => trs.map((t) => Number(t.dataset.seq)));
  await page.locator('#older').click();
  await page.waitForFunction(() => document.querySelectorAll('#rows tr').length === 4);
  const allSeqs = await page.locator('#rows tr').evaluateAll((trs) => trs.map((t) => Number(t.dataset.seq)));
  check(allSeqs.slice(2).every((s) => s < Math.min(...firstSeqs)), 'Older adds older rows below: ' + allSeqs);
  const first = await (await context.request.get(cfg.base + '/api/audit?limit=2')).json();
  check(first.rows.length === 2 && first.next !== null, 'a first page of two and a next');
  const older = await (await context.request.get(cfg.base + '/api/audit?limit=2&before=' + first.next)).json();
  check(older.rows.length > 0 && older.rows.every((r) => r.seq < first.next), 'the next page is older');
  // The digest of the period, with its charts drawn.
  await page.locator('#digest .digest-counts').waitFor();
  check((await page.locator('#digest').innerText()).includes('denied: 2'), 'the digest counts the denials: ' + (await page.locator('#digest').innerText()));
  const charts = page.locator('#charts img.chart');
  await page.waitForFunction(() => [...document.querySelectorAll('#charts img.chart')].every((i) => i.complete && i.naturalWidth > 0));
  check((await charts.count()) === 2, 'two charts');
  const widths = await charts.evaluateAll((imgs) => imgs.map((i) => i.naturalWidth));
  check(widths.every((w) => w === 960), 'the charts are drawn: ' + widths);
  check((await charts.first().getAttribute('alt')).length > 10, 'with a text alternative');
  log('audit view searched, filtered, paged and exported');
  check(dialogs.length === 0, 'no dialog opened: ' + dialogs.join('; '));
  check(pageErrors.length === 0, 'no script errors: ' + pageErrors.join('; '));
  check(cspViolations.length === 0, 'no CSP violations: ' + cspViolations.join('; '));
  result.ok = true;
} catch (e) {
  result.error = String(e && e.stack ? e.stack : e);
  log('FAILED:', result.error);
} finally {
  result.timings.total_ms = Date.now() - started;
  result.dialogs = dialogs;
  await context.close().catch(() => {});
  input.close();
}
process.stdout.write('HOLDPOINT RESULT ' + JSON.stringify(result) + '\n');
process.exit(result.ok ? 0 : 1);
