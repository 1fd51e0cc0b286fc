// `npm pack` makes a package that installs and loads from both module systems, with types
// and no runtime dependencies.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

test('the packed tarball installs; import and require both work', { timeout: 120_000 }, () => {
  const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  assert.equal(manifest.dependencies, undefined, 'zero runtime dependencies');
  const work = mkdtempSync(join(tmpdir(), 'exisone-pack-'));
  try {
    const [packed] = JSON.parse(execFileSync(npm, ['pack', '--json', '--pack-destination', work], { cwd: root, encoding: 'utf8' }));
    const files = packed.files.map((f) => f.path);
    for (const expected of ['dist/esm/index.js', 'dist/cjs/index.js', 'dist/types/index.d.ts', 'package.json']) {
      assert.ok(files.includes(expected), `${expected} is in the package`);
    }
    assert.ok(!files.some((f) => f.startsWith('src/') || f.startsWith('test/')), 'only the build ships');

    const app = join(work, 'app');
    execFileSync('mkdir', ['-p', app]);
    writeFileSync(join(app, 'package.json'), '{"name": "app", "version": "1.0.0", "private": true}');
    execFileSync(npm, ['install', '--offline', '--no-audit', '--no-fund', join(work, packed.filename)], { cwd: app, stdio: 'pipe' });
    const probe = "c.getVersion() + ' ' + typeof c.validateOffline + ' ' + typeof m.verifyLease";
    const required = execFileSync(process.execPath, ['-e',
      `const m = require('exisone-client'); const c = new m.ExisOneClient({baseUrl: 'https://h'}); console.log(${probe})`], { cwd: app, encoding: 'utf8' });
    const imported = execFileSync(process.execPath, ['--input-type=module', '-e',
      `import * as m from 'exisone-client'; const c = new m.ExisOneClient({baseUrl: 'https://h'}); console.log(${probe})`], { cwd: app, encoding: 'utf8' });
    assert.equal(required.trim(), `${manifest.version} function function`);
    assert.equal(imported.trim(), required.trim());
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});
