"""A deliberately small reference counter for captured QEMU 7.2 streams (a test oracle).

It shares no code with ferry's parser: the capture tests check `ferry inspect` against it and
check it against QEMU's own counters. It only handles what the capture tests produce (x86,
4 KiB pages, no CONFIGURATION subsections, no hugepage blocks) and raises ValueError on
anything else. Grammar: /work/shared/docs/qemu-migration-stream.md (§1-§5, §7).

    count_main(bytes)    -> {'zero', 'normal', 'xbzrle', 'xbzrle_bytes', 'commands', 'stop',
                             'stop_at'}   ('stop': 'eof' | 'full' | 'start:<idstr>')
    count_multifd(bytes) -> {'normal', 'packets', 'sync_packets', 'bytes_after_init'}
    count_rp(bytes)      -> {NAME: n} of return-path messages

'xbzrle_bytes' is what 7.2 adds to xbzrle-cache.bytes per XBZRLE record: the record minus
its 8-byte word (block name + 1 + 2 + n). QEMU also adds 4096 per overflow.
"""
import struct

TP = 4096
CMD_NAMES = ['INVALID', 'OPEN_RETURN_PATH', 'PING', 'POSTCOPY_ADVISE', 'POSTCOPY_LISTEN',
             'POSTCOPY_RUN', 'POSTCOPY_RAM_DISCARD', 'PACKAGED', 'ENABLE_COLO',
             'POSTCOPY_RESUME', 'RECV_BITMAP', 'SWITCHOVER_START']
RP_NAMES = ['INVALID', 'SHUT', 'PONG', 'REQ_PAGES_ID', 'REQ_PAGES', 'RECV_BITMAP', 'RESUME_ACK',
            'SWITCHOVER_ACK']


class _Reader:
    def __init__(self, data):
        self.d = data
        self.p = 0

    def need(self, n):
        if self.p + n > len(self.d):
            raise ValueError('truncated at %d (need %d bytes)' % (self.p, n))

    def u8(self):
        self.need(1)
        self.p += 1
        return self.d[self.p - 1]

    def be16(self):
        self.need(2)
        self.p += 2
        return struct.unpack_from('>H', self.d, self.p - 2)[0]

    def be32(self):
        self.need(4)
        self.p += 4
        return struct.unpack_from('>I', self.d, self.p - 4)[0]

    def be64(self):
        self.need(8)
        self.p += 8
        return struct.unpack_from('>Q', self.d, self.p - 8)[0]

    def skip(self, n):
        self.need(n)
        self.p += n

    def str8(self):
        n = self.u8()
        self.need(n)
        self.p += n
        return self.d[self.p - n:self.p]


def count_main(data):
    r = _Reader(data)
    c = {'zero': 0, 'normal': 0, 'xbzrle': 0, 'xbzrle_bytes': 0, 'commands': {},
         'stop': None, 'stop_at': None}
    if r.be32() != 0x5145564D or r.be32() != 3:
        raise ValueError('not a QEMU v3 stream')
    ram_ids = set()

    def ram_payload():
        while True:
            w = r.be64()
            f = w & (TP - 1)
            if f & 0x10:
                return
            if f & 0x04:
                left = w & ~(TP - 1)
                while left > 0:
                    r.str8()
                    left -= r.be64()
                continue
            if f & 0x200:
                continue
            name_len = 0
            if not f & 0x20:
                name_len = 1 + len(r.str8())
            if f & 0x02:
                r.u8()
                c['zero'] += 1
            elif f & 0x08:
                r.skip(TP)
                c['normal'] += 1
            elif f & 0x40:
                r.u8()
                n = r.be16()
                r.skip(n)
                c['xbzrle'] += 1
                c['xbzrle_bytes'] += name_len + 3 + n
            else:
                raise ValueError('unexpected RAM flags 0x%x at %d' % (f, r.p - 8))

    def footer():
        if r.p < len(data) and data[r.p] == 0x7E:
            r.skip(5)

    def items(end):
        while r.p < end:
            at = r.p
            t = r.u8()
            if t == 0x07 and at == 8:
                r.skip(r.be32())
                if r.p < len(data) and data[r.p] == 0x05:
                    raise ValueError('CONFIGURATION subsections are not handled')
            elif t == 0x08:
                cmd, ln = r.be16(), r.be16()
                name = CMD_NAMES[cmd] if cmd < len(CMD_NAMES) else 'CMD_%d' % cmd
                c['commands'][name] = c['commands'].get(name, 0) + 1
                if cmd == 7:
                    blob = r.be32()
                    items(r.p + blob)  # the package: LISTEN, FULL sections, PING, RUN
                else:
                    r.skip(ln)
            elif t == 0x01:
                sid = r.be32()
                idstr = r.str8()
                r.be32()
                r.be32()
                if idstr != b'ram':
                    return 'start:' + idstr.decode(errors='replace'), at
                ram_ids.add(sid)
                ram_payload()
                footer()
            elif t in (0x02, 0x03):
                sid = r.be32()
                if sid not in ram_ids:
                    return 'section %d' % sid, at
                ram_payload()
                footer()
            elif t == 0x04:
                # Device state has no length: skip to the end of an enclosing PACKAGED blob,
                # or stop (no RAM follows in precopy, §4).
                if end != len(data):
                    r.p = end
                    return None, None
                return 'full', at
            elif t == 0x00:
                return 'eof', at
            else:
                raise ValueError('unexpected item type 0x%02x at %d' % (t, at))
        return None, None

    c['stop'], c['stop_at'] = items(len(data))
    return c


def count_multifd(data):
    r = _Reader(data)
    if r.be32() != 0x11223344:
        raise ValueError('not a multifd channel')
    r.skip(60)
    c = {'normal': 0, 'packets': 0, 'sync_packets': 0, 'bytes_after_init': len(data) - 64}
    while r.p < len(data):
        if r.be32() != 0x11223344:
            raise ValueError('bad packet magic at %d' % (r.p - 4))
        r.be32()
        flags = r.be32()
        alloc = r.be32()
        normal = r.be32()
        r.skip(320 - 20 + 8 * alloc + normal * TP)
        c['packets'] += 1
        c['sync_packets'] += flags & 1
        c['normal'] += normal
    return c


def count_rp(data):
    r = _Reader(data)
    out = {}
    while r.p < len(data):
        t, ln = r.be16(), r.be16()
        r.skip(ln)
        name = RP_NAMES[t] if t < len(RP_NAMES) else 'RP_%d' % t
        out[name] = out.get(name, 0) + 1
        if t == 5:  # RECV_BITMAP: be64 size, bitmap, be64 end mark beyond len
            r.skip(r.be64() + 8)
    return out
