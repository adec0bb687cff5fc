// Drives the playground page in headless Debian Chromium, end to end against a real server, and prints one JSON
// line of what it saw (the pytest side asserts on it).
//
// usage: node playground.mjs BASE_URL PERSONA_ID SCREENSHOT.png
// playwright-core comes from tests/godot's node_modules (tests/godot/install.sh installs it and chromium).
import { chromium } from '../godot/node_modules/playwright-core/index.mjs';

const [base, personaId, screenshot] = process.argv.slice(2);
// With PLAYGROUND_KEY: the browser answers the page's Basic challenge with that key, and only opening is checked.
const key = process.env.PLAYGROUND_KEY;
const browser = await chromium.launch({
  executablePath: process.env.NPC_CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
const seen = { errors: [], step: 'start' };
let page = null;
try {
  const context = await browser.newContext({
    viewport: { width: 1500, height: 950 },
    ...(key ? { httpCredentials: { username: 'designer', password: key } } : {}),
  });
  page = await context.newPage();
  page.on('pageerror', (err) => seen.errors.push(String(err)));
  page.setDefaultTimeout(Number(process.env.PLAYGROUND_TIMEOUT_MS || 120000));
  await page.goto(base + '/playground');
  seen.step = "await page.waitForFunction(() => document.getElementById('status').tex";
  await page.waitForFunction(() => document.getElementById('status').textContent === 'ready');
  seen.personas = await page.$$eval('#persona-select option', (os) => os.map((o) => o.value));
  if (key) throw new Error('done');

  // Pick the persona; the editor fills in and the server validates it.
  await page.selectOption('#persona-select', personaId);
  seen.step = "await page.waitForFunction(() => document.getElementById('validation')";
  await page.waitForFunction(() => document.getElementById('validation').textContent.startsWith('valid'));
  // An edit the server refuses shows its error as the designer types, and a good one clears it.
  await page.fill('#f-examples', 'How much to cross? |');
  seen.step = "await page.waitForFunction(() => document.getElementById('validation')";
  await page.waitForFunction(() => document.getElementById('validation').className === 'bad');
  seen.invalid = await page.textContent('#validation');
  await page.fill('#f-examples', 'How much to cross? | Two coppers. Each way.');
  await page.fill('#f-system_prompt', 'Hilda runs the ferry across the Grey River. She is curt and counts coins.');
  seen.step = "await page.waitForFunction(() => document.getElementById('validation')";
  await page.waitForFunction(() => document.getElementById('validation').textContent.startsWith('valid'));
  seen.valid = await page.textContent('#validation');

  // Talk: the reply streams into the transcript; the inspector shows that line's prompt.
  await page.fill('#line', 'Is the ferry running today?');
  const deltas = [];
  await page.exposeFunction('noteReply', (text) => deltas.push(text));
  await page.evaluate(() => {
    const npc = () => document.querySelector('#transcript .npc:last-child');
    new MutationObserver(() => { if (npc()) window.noteReply(npc().textContent); })
      .observe(document.getElementById('transcript'), { subtree: true, childList: true, characterData: true });
  });
  await page.click('#talk-form button');
  seen.step = "await page.waitForFunction(() => document.getElementById('status').tex";
  await page.waitForFunction(() => document.getElementById('status').textContent.startsWith('reply:'));
  seen.reply = await page.textContent('#transcript .npc');
  seen.replyUpdates = new Set(deltas).size;
  seen.sections = await page.$$eval('#inspector .sec-name', (cells) => cells.map((c) => c.textContent));
  seen.sectionTokens = await page.$$eval('#inspector .tok', (cells) => cells.map((c) => Number(c.textContent)));
  seen.inspectorMeta = await page.textContent('#inspector .meta');

  // Compare three presets in columns, then save the second as the persona.
  await page.fill('#line', 'Can you take my cart across?');
  await page.click('#run-compare');
  seen.step = "await page.waitForSelector('#columns .column:nth-child(3)');";
  await page.waitForSelector('#columns .column:nth-child(3)');
  seen.summary = await page.textContent('#compare-summary');
  seen.columns = await page.$$eval('#columns .column h3', (hs) => hs.map((h) => h.textContent));
  seen.replies = await page.$$eval('#columns .column .reply', (rs) => rs.map((r) => r.textContent));
  await page.click('#columns .column:nth-child(2) button');
  seen.step = "await page.waitForFunction(() => document.getElementById('status').tex";
  await page.waitForFunction(() => document.getElementById('status').textContent.startsWith('saved'));
  seen.saved = await page.textContent('#status');
  seen.transcriptAfterSave = await page.textContent('#transcript');
  await page.screenshot({ path: screenshot, fullPage: true });
} catch (err) {
  if (!(key && String(err).endsWith('done'))) seen.errors.push(String(err));
  if (page) seen.status = await page.textContent('#status').catch(() => '');
  if (page) seen.validation = await page.textContent('#validation').catch(() => '');
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
