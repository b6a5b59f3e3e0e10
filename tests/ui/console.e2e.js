// The console in headless Chromium (Debian's, through Playwright's executablePath), driven by
// tests/ui/test_console.py, which starts the master and a fake agent and passes them in the environment.
// Every step asserts what the page shows and leaves a screenshot in SHOTS. Exits non-zero on the first failure.
'use strict';
const assert = require('node:assert/strict');
const path = require('node:path');
const { chromium } = require('playwright');

const URL_ = process.env.TITUS_URL;
const TOKEN = process.env.TITUS_TOKEN;
const JOB = process.env.JOB_ID;
const SHOTS = process.env.SHOTS;

async function until(what, fn, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await fn();
    if (last) return last;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(last)}`);
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const shot = (name) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(m.text());
  });
  const refused = [];  // every 4xx/5xx the browser saw, checked at the end against the one expected
  page.on('response', (r) => {
    const u = new URL(r.url());
    if (r.status() >= 400 && u.pathname !== '/favicon.ico') refused.push(`${r.status()} ${r.request().method()} ${u.pathname}`);
  });
  try {
    // 1. not logged in: the console sends us to the login page; a wrong token is refused
    await page.goto(`${URL_}/ui/jobs`);
    assert.match(page.url(), /\/ui\/login\?next=/);
    await page.fill('#token', 'not-the-token');
    await page.click('#login');
    assert.match(await page.textContent('.error'), /not valid/);
    await shot('01-login-refused');
    await page.fill('#token', TOKEN);
    await page.click('#login');
    assert.match(page.url(), /\/ui\/jobs$/);
    const cookies = await page.context().cookies();
    const c = cookies.find((k) => k.name === 'titus_ui_token');
    assert.ok(c && c.httpOnly && c.sameSite === 'Strict', JSON.stringify(cookies));
    assert.equal(await page.evaluate(() => document.cookie), '', 'the token cookie must not be readable by scripts');

    // 2. the submitted job is listed; htmx (served by the master, from npm) is loaded
    const link = page.locator(`#jobs-table a:text-is("${JOB}")`);
    await link.waitFor();
    assert.equal(await page.evaluate(() => typeof window.htmx), 'object', 'htmx did not load');
    const row = page.locator('#jobs-table tr', { has: page.locator(`a:text-is("${JOB}")`) });
    assert.match(await row.textContent(), /uiapp[\s\S]*service[\s\S]*ui@example\.com[\s\S]*Accepted/);
    await shot('02-jobs');

    // 3. open it: state, capacity, its running task
    await link.click();
    assert.equal(await page.textContent('#job-id'), JOB);
    assert.match(await page.textContent('#job-state'), /Accepted/);
    assert.match(await page.textContent('#capacity'), /desired 1,/);
    await until('one started task', async () => {
      await page.reload();
      return (await page.locator('#active-tasks td.state:text-is("Started")').count()) === 1;
    });
    await shot('03-job');

    // 4. scale to 3 through the form: the page says so and three tasks run
    await page.fill('#desired', '3');
    await page.click('#scale');
    assert.match(await page.textContent('.done'), /Capacity updated/);
    assert.match(await page.textContent('#capacity'), /desired 3,/);
    // no reload: the job's event stream (/ui/events?job=) says it changed and htmx re-fetches the tasks
    await until('three started tasks, shown without reloading', async () =>
      (await page.locator('#active-tasks td.state:text-is("Started")').count()) === 3);
    await shot('04-job-scaled');
    // and no polling: while nothing changes, the page asks for nothing (it used to every 3 s)
    const asked = [];
    const onRequest = (r) => { if (r.headers()['hx-request']) asked.push(new URL(r.url()).pathname); };
    page.on('request', onRequest);
    await new Promise((r) => setTimeout(r, 4000));
    page.off('request', onRequest);
    assert.deepEqual(asked, [], 'fragments fetched while nothing changed');

    // 5. a task's page: logs arrive through htmx and follow the task's output (the fake agent adds a line a round)
    await page.locator('#active-tasks a').first().click();
    assert.match(await page.textContent('#task-state'), /Started/);
    const first = await until('stdout in the page', async () => {
      const t = await page.locator('#logs pre#logs-stdout').textContent().catch(() => null);
      return t && /upload \d+/.test(t) ? t : null;
    });
    await until('a later stdout upload shown without reload', async () => {
      const t = await page.locator('#logs pre#logs-stdout').textContent();
      return t !== first && /upload \d+/.test(t);
    });
    assert.equal(await page.locator('#logs pre#logs-stderr').count(), 1);
    await shot('05-task-logs');
    // the task's state follows too: killed through the API, the page shows it without a reload
    const taskId = await page.textContent('#task-id');
    const killed = await fetch(`${URL_}/api/v3/tasks/${taskId}`, {
      method: 'DELETE', headers: { Authorization: `Bearer ${TOKEN}` },
    });
    assert.equal(killed.status, 200);
    await until('the kill shown on the task page without reloading', async () =>
      /KillInitiated|Finished/.test(await page.textContent('#task-state')));
    await shot('05b-task-killed');

    // 6. back to the job, kill it: it finishes and its tasks are listed as finished
    await page.click('dd a');
    await page.click('#kill');
    assert.match(await page.textContent('.done'), /Kill requested/);
    await until('the job to finish, shown without reloading', async () =>
      (await page.textContent('#live-state')) === 'Finished');
    await page.reload();
    assert.match(await page.textContent('#job-state'), /Finished/);
    assert.equal(await page.locator('#active-tasks td.state').count(), 0);
    // the three that ran, and the one killed from its page in step 5 (its replacement is among the three)
    assert.equal(await page.locator('#finished-tasks td.state:text-is("Finished")').count(), 4);
    assert.equal(await page.locator('#kill').count(), 0, 'a finished job has no kill button');
    await shot('06-job-killed');

    // 7. the other pages
    await page.click('nav a:text-is("Agents")');
    assert.match(await page.textContent('#agents-table'), /ui-browser-agent[\s\S]*Registered[\s\S]*Active/);
    await shot('07-agents');
    await page.click('nav a:text-is("Instance groups")');
    assert.match(await page.textContent('#instance-groups-table'), /ui-browser-pool/);
    await page.click('nav a:text-is("Capacity groups")');
    assert.match(await page.textContent('#capacity-groups-table'), /DEFAULT/);
    await shot('08-capacity-groups');
    assert.deepEqual(errors, [], 'the pages logged errors');
    assert.deepEqual(refused, ['401 POST /ui/login'], 'only the wrong token may have been refused');
  } catch (e) {
    await shot('failure').catch(() => {});
    throw e;
  } finally {
    await browser.close();
  }
}

main().then(() => { console.log('console e2e: ok'); }, (e) => { console.error(e); process.exit(1); });
