// Drives the Godot 4.6 web build in headless Debian Chromium and relays what the engine prints.
//
// usage: node drive.mjs URL TIMEOUT_MS [SCREENSHOT.png]
// Every engine print arrives as a console line ("GD: ..." for stdout, "GDERR: ..." for stderr). Exits with the
// engine's exit code; 90 when the page failed to boot, 91 on a page error, 92 on timeout.
import { chromium } from 'playwright-core';

const [url, timeoutArg, screenshot] = process.argv.slice(2);
const timeoutMs = Number(timeoutArg || 120000);
const CHROMIUM = process.env.NPC_CHROMIUM || '/usr/bin/chromium';

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  // Software GL and no background services: what runs the engine headless on a machine without a GPU.
  args: ['--no-sandbox', '--disable-gpu', '--use-angle=swiftshader', '--enable-unsafe-swiftshader',
    '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update',
    '--disable-sync'],
});
let code = 92;
try {
  const page = await browser.newPage();
  const done = new Promise((resolve) => {
    page.on('console', (msg) => {
      const text = msg.text();
      console.log(text);
      const exit = /^GD_EXIT (-?\d+)/.exec(text);
      if (exit) { code = Number(exit[1]); resolve(); }
      if (text.startsWith('GD_FAIL')) { code = 90; resolve(); }
    });
    page.on('pageerror', (err) => { console.log('PAGEERROR ' + err); code = 91; resolve(); });
  });
  await page.goto(url);
  const timer = new Promise((resolve) => setTimeout(() => { console.log('HARNESS timeout'); resolve(); },
    timeoutMs));
  await Promise.race([done, timer]);
  if (screenshot) await page.screenshot({ path: screenshot });
} finally {
  await browser.close();
}
console.log('HARNESS exit=' + code);
process.exit(code);
