import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';

// The salt of the ExisOne SDKs' fingerprint.
const HARDWARE_SALT = 'ExisOneHardwareSalt_v1';
// /proc/cpuinfo lines that change between reads (frequency scaling, per-core ids).
const VOLATILE_CPUINFO = ['cpu mhz', 'bogomips', 'cache size', 'core id', 'apicid', 'initial apicid', 'cpu cores', 'siblings', 'processor'];
// Adapters that come and go with containers, VPNs and VMs.
const VIRTUAL_NICS = ['docker', 'br-', 'veth', 'virbr', 'vmnet', 'vboxnet', 'tun', 'tap', 'wg', 'tailscale', 'zt', 'utun'];

function readIfPresent(path: string): string | undefined {
  try {
    return existsSync(path) ? readFileSync(path, 'utf8').trim() || undefined : undefined;
  } catch {
    return undefined;
  }
}

function run(command: string, args: string[]): string | undefined {
  try {
    return execFileSync(command, args, { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'ignore'], windowsHide: true });
  } catch {
    return undefined;
  }
}

function platformIdentifiers(): string[] {
  const found: string[] = [];
  if (process.platform === 'win32') {
    for (const [klass, property] of [['Win32_Processor', 'ProcessorId'], ['Win32_BaseBoard', 'SerialNumber'], ['Win32_BIOS', 'SerialNumber'], ['Win32_DiskDrive', 'SerialNumber']]) {
      const value = run('wmic', [klass, 'get', property])?.trim().split('\n')[1]?.trim();
      if (value && !['none', 'to be filled by o.e.m.'].includes(value.toLowerCase())) found.push(value);
    }
    return found;
  }
  for (const path of ['/etc/machine-id', '/var/lib/dbus/machine-id', '/sys/class/dmi/id/product_uuid']) {
    const value = readIfPresent(path);
    if (value) found.push(value);
  }
  const cpuinfo = readIfPresent('/proc/cpuinfo');
  if (cpuinfo) {
    const stable = cpuinfo.split('\n').filter((line) => {
      const key = line.split(':', 1)[0].trim().toLowerCase();
      return key !== '' && !VOLATILE_CPUINFO.some((prefix) => key.startsWith(prefix));
    });
    if (stable.length) found.push(stable.map((line) => line.trimEnd()).join('\n'));
  } else if (process.platform === 'darwin') {
    const uuid = /Hardware UUID:\s*(\S+)/.exec(run('system_profiler', ['SPHardwareDataType']) ?? '')?.[1];
    if (uuid) found.push(uuid);
  }
  return found;
}

function macAddresses(): string[] {
  const macs = new Set<string>();
  for (const [name, addresses] of Object.entries(os.networkInterfaces())) {
    const lower = name.toLowerCase();
    if (lower === 'lo' || lower === 'lo0' || VIRTUAL_NICS.some((prefix) => lower.startsWith(prefix))) continue;
    for (const address of addresses ?? []) {
      const mac = address.mac.replace(/[:-]/g, '').toUpperCase();
      if (!address.internal && mac.length === 12 && mac !== '000000000000') macs.add(mac);
    }
  }
  return [...macs].sort();
}

/** A stable fingerprint of this machine: SHA-256 of the salted identifiers, 64 upper-case hex digits. */
export function generateHardwareId(): string {
  const components = [
    ...platformIdentifiers(),
    ...macAddresses(),
    os.arch().endsWith('64') ? 'x64' : 'x86',
    String(os.cpus().length || 1),
    os.hostname(),
    `${os.type()}-${os.release()}-${os.arch()}`,
  ];
  return createHash('sha256').update(HARDWARE_SALT + components.join(''), 'utf8').digest('hex').toUpperCase();
}
