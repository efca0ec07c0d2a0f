/** Address arithmetic of lib/network/addresses.ts: IPv6 parsing and printing, subnets, SLAAC. */
import { formatCidr6, formatIpv6, overlaps6, parseCidr6, parseIpv6, pickFreeUla, slaacAddress } from '../lib/network/addresses';

test('IPv6 text round-trips to the canonical form (RFC 5952)', () => {
  const cases: Array<[string, string]> = [
    ['::', '::'],
    ['::1', '::1'],
    ['FD00::2', 'fd00::2'],
    ['fe80::fc:ff:fe00:1', 'fe80::fc:ff:fe00:1'],
    ['2001:0db8:0000:0000:0000:0000:0002:0001', '2001:db8::2:1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // the first of two equal runs
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // one zero group stays
    ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
    ['fd42:0:0:1::', 'fd42:0:0:1::'],
  ];
  for (const [input, out] of cases) expect(formatIpv6(parseIpv6(input))).toBe(out);
});

test('bad IPv6 text is refused', () => {
  for (const bad of [':::', '1::2::3', '1:2:3:4:5:6:7', 'g::1', '1:2:3:4:5:6:7:8:9', '12345::', '1:2:3:4:5:6:7:8::', '']) expect(() => parseIpv6(bad)).toThrow(/not an IPv6 address/);
  expect(() => parseCidr6('fd00::1')).toThrow(/with a prefix/);
  expect(() => parseCidr6('fd00::1/129')).toThrow(/with a prefix/);
});

test('subnets: network, last address, overlap', () => {
  const a = parseCidr6('fd42:1:2:3::1/64');
  expect(formatIpv6(a.network)).toBe('fd42:1:2:3::');
  expect(formatIpv6(a.last)).toBe('fd42:1:2:3:ffff:ffff:ffff:ffff');
  expect(overlaps6(a, parseCidr6('fd42:1:2::/48'))).toBe(true);
  expect(overlaps6(a, parseCidr6('fd42:1:2:4::1/64'))).toBe(false);
});

test('a free ULA /64 avoids the subnets taken; SLAAC addresses are modified EUI-64', () => {
  const taken = [parseCidr6('fd00::/9')]; // half of fd00::/8
  for (let i = 0; i < 50; i++) {
    const c = pickFreeUla(taken);
    expect(c.prefix).toBe(64);
    expect(formatCidr6(c)).toMatch(/^fd[89a-f][0-9a-f]:[0-9a-f:]+::1\/64$/);
    expect(overlaps6(c, taken[0])).toBe(false);
  }
  expect(slaacAddress(parseCidr6('fd42:1:2:3::1/64'), '00:16:3e:12:34:56')).toBe('fd42:1:2:3:216:3eff:fe12:3456');
});
