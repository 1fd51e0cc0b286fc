// Each output directory says which module system its .js files use, whatever the package root says.
const fs = require('fs');
const path = require('path');
const dist = path.join(__dirname, '..', 'dist');
fs.writeFileSync(path.join(dist, 'esm', 'package.json'), '{"type": "module"}\n');
fs.writeFileSync(path.join(dist, 'cjs', 'package.json'), '{"type": "commonjs"}\n');
