#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/ (small valid inputs, in each target's input
format; see the doc comment at the top of each src/fuzzing/<target>.rs in the main crate).

Run from anywhere: `python3 fuzz/make_seeds.py`. Seeds are named seed-*, so files the fuzzer
adds to a corpus (named by their SHA-1) are left alone. The bytes come from the unit tests in
src/ (SPS, SEI, TS muxer, RTP packets), the README (config) and browser-shaped SDP offers.
"""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


# --- H.264 / H.265 bitstream helpers ------------------------------------------------------

class Bits:
    def __init__(self):
        self.bits = []

    def u(self, n, v):
        for i in reversed(range(n)):
            self.bits.append((v >> i) & 1)

    def ue(self, v):
        v += 1
        n = v.bit_length()
        self.u(n - 1, 0)
        self.u(n, v)

    def se(self, v):
        self.ue(2 * v - 1 if v > 0 else -2 * v)

    def rbsp(self):
        self.bits.append(1)
        while len(self.bits) % 8:
            self.bits.append(0)
        return bytes(
            int("".join(map(str, self.bits[i:i + 8])), 2) for i in range(0, len(self.bits), 8)
        )


def escape(rbsp):
    out, zeros = bytearray(), 0
    for b in rbsp:
        if zeros >= 2 and b <= 3:
            out.append(3)
            zeros = 0
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


def h264_sps(profile, width, height, crop_bottom=0, scaling=False, poc_type=2):
    b = Bits()
    b.u(8, profile)
    b.u(8, 0xC0 if profile == 66 else 0)
    b.u(8, 31)
    b.ue(0)  # sps id
    if profile in (100, 110, 122, 244):
        b.ue(1)  # chroma_format_idc
        b.ue(0)
        b.ue(0)
        b.u(1, 0)
        b.u(1, 1 if scaling else 0)
        if scaling:
            for i in range(8):
                present = 1 if i in (0, 6) else 0
                b.u(1, present)
                if present:
                    for _ in range(16 if i < 6 else 64):
                        b.se(1)
    b.ue(0)  # log2_max_frame_num_minus4
    b.ue(poc_type)
    if poc_type == 0:
        b.ue(2)
    elif poc_type == 1:
        b.u(1, 0)
        b.se(0)
        b.se(1)
        b.ue(2)
        b.se(1)
        b.se(-1)
    b.ue(1)  # max_num_ref_frames
    b.u(1, 0)
    b.ue(width // 16 - 1)
    b.ue((height + crop_bottom * 2) // 16 - 1)
    b.u(1, 1)  # frame_mbs_only
    b.u(1, 1)  # direct_8x8
    if crop_bottom:
        b.u(1, 1)
        b.ue(0)
        b.ue(0)
        b.ue(0)
        b.ue(crop_bottom)
    else:
        b.u(1, 0)
    b.u(1, 0)  # vui
    return bytes([0x67]) + escape(b.rbsp())


# From src/media/h264.rs tests: x264 High 1920x1080 (cropped from 1088).
SPS_HD = bytes([
    0x67, 0x64, 0x00, 0x28, 0xac, 0xd9, 0x40, 0x78, 0x02, 0x27, 0xe5, 0xc0, 0x44, 0x00,
    0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x60, 0xc6, 0x58,
])
PPS = bytes([0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0])
SPS_720 = h264_sps(66, 1280, 720)
# From src/media/h265.rs tests: x265 Main 320x240.
SPS_265 = bytes([
    0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00,
    0x00, 0x03, 0x00, 0x3c, 0xa0, 0x0a, 0x08, 0x0f, 0x16, 0x59, 0x59, 0xa4, 0x93, 0x2b,
    0xc0, 0x5a, 0x02, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x03, 0x00, 0x0a, 0x10,
])
VPS_265 = bytes([0x40, 0x01, 0x0c, 0x01, 0xff, 0xff, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90])
PPS_265 = bytes([0x44, 0x01, 0xc1, 0x72, 0xb4, 0x62, 0x40])

put("h264_sps", "x264-high-1080p", SPS_HD)
put("h264_sps", "baseline-720p", SPS_720)
put("h264_sps", "high-360p-crop-scaling", h264_sps(100, 640, 360, crop_bottom=4, scaling=True, poc_type=0))
put("h264_sps", "main-poc1", h264_sps(77, 320, 240, poc_type=1))
put("h264_sps", "not-sps", bytes([0x68, 1, 2]))
put("h265_sps", "x265-main-320x240", SPS_265)
put("h265_sps", "vps", VPS_265)


# --- SEI ----------------------------------------------------------------------------------

def capture_sei(unix_us, sequence, before=b""):
    rbsp = before + bytes([5, 28]) + b"livelens-time-v1" + struct.pack(">qI", unix_us, sequence) + b"\x80"
    return bytes([6]) + escape(rbsp)


put("sei", "capture-time", capture_sei(1_795_000_000_123_456, 42))
put("sei", "escaped", capture_sei(0x0000_0001_0000_0000, 1))
put("sei", "after-recovery-point", capture_sei(7, 1, before=bytes([6, 1, 0x84])))
put("sei", "other-sei", bytes([6, 6, 1, 0x84, 0x80]))


# --- Annex B ------------------------------------------------------------------------------

def annexb(*nals):
    return b"".join(b"\x00\x00\x00\x01" + n for n in nals)


H264_STREAM = annexb(SPS_720, PPS, bytes([0x06]) + capture_sei(5, 1)[1:], bytes([0x65, 0x88, 0x84, 0x21]),
                     bytes([0x65, 0x40, 9]), bytes([0x41, 0x9a, 7]), bytes([0x09, 0x10]), bytes([0x41, 0x9b, 8]))
H265_STREAM = annexb(VPS_265, SPS_265, PPS_265, bytes([0x26, 0x01, 0x80, 1]), bytes([0x02, 0x01, 0x80, 2]),
                     bytes([0x02, 0x01, 0x00, 3]))
put("annexb", "h264-chunk1", bytes([0x00]) + H264_STREAM)
put("annexb", "h264-chunk5", bytes([0x08]) + H264_STREAM)
put("annexb", "h265-chunk3", bytes([0x05]) + H265_STREAM)
# The unit test's stream: 3-byte start codes and trailing zeros.
put("annexb", "h264-unit-test", bytes([0x02]) + bytes([
    0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 3, 0, 0, 1, 0x65, 0x88, 0, 0, 0, 0, 1, 0x65, 0x40, 9,
    0, 0, 0, 1, 0x41, 0x9a, 7, 0, 0, 0, 1, 0x09, 0x10, 0, 0, 0, 1, 0x41, 0x9b, 8]))


# --- MPEG-TS (the TestMuxer of src/media/mpegts.rs) ---------------------------------------

class TsMuxer:
    def __init__(self, streams):
        self.streams = streams
        self.cc = {}

    def packet(self, pid, start, payload):
        cc = self.cc.get(pid, 0)
        p = bytearray([0x47, (start << 6) | (pid >> 8), pid & 0xFF])
        stuffing = 184 - len(payload)
        if stuffing > 0:
            p.append(0x30 | cc)
            p.append(stuffing - 1)
            if stuffing > 1:
                p.append(0)
                p.extend(b"\xff" * (stuffing - 2))
        else:
            p.append(0x10 | cc)
        self.cc[pid] = (cc + 1) & 0xF
        p.extend(payload)
        assert len(p) == 188
        return bytes(p)

    @staticmethod
    def section(table, id_, body):
        length = 5 + len(body) + 4
        s = bytearray([0, table, 0xB0 | (length >> 8), length & 0xFF])
        s += struct.pack(">H", id_) + bytes([0xC1, 0, 0]) + body + b"\0\0\0\0"
        return bytes(s)

    def tables(self):
        pat = self.section(0, 1, bytes([0, 1, 0xF0, 0x00]))
        body = bytearray([0xE1, 0x00, 0xF0, 0x00])
        for pid, stream_type, info in self.streams:
            body.append(stream_type)
            body += struct.pack(">HH", 0xE000 | pid, 0xF000 | len(info)) + info
        pmt = self.section(2, 1, bytes(body))
        pad = lambda s: s + b"\xff" * (184 - len(s))
        return self.packet(0, True, pad(pat)) + self.packet(0x1000, True, pad(pmt))

    def pes(self, pid, pts, bounded, payload, stream_id=0xE0):
        length = 3 + 5 + len(payload) if bounded else 0
        pes = bytearray([0, 0, 1, stream_id]) + struct.pack(">H", length) + bytes([0x80, 0x80, 5])
        pes += bytes([
            0x21 | ((pts >> 29) & 0x0E), (pts >> 22) & 0xFF, 0x01 | ((pts >> 14) & 0xFE),
            (pts >> 7) & 0xFF, 0x01 | ((pts << 1) & 0xFE),
        ])
        pes += payload
        return b"".join(self.packet(pid, i == 0, bytes(pes[i:i + 184])) for i in range(0, len(pes), 184))


ADTS = bytes([0xFF, 0xF1, 0x4C, 0x80, 0x01, 0x5F, 0xFC, 1, 2, 3])  # AAC-LC 48 kHz stereo, 3 bytes
OPUS_INFO = bytes([0x05, 4]) + b"Opus" + bytes([0x7F, 2, 0x80, 1])
mux = TsMuxer([(0x100, 0x1B, b""), (0x101, 0x0F, b""), (0x102, 0x06, OPUS_INFO)])
ts = mux.tables()
ts += mux.pes(0x100, 9000, False, annexb(SPS_720, PPS, bytes([0x65, 0x88, 0x84]) + bytes(range(200))))
ts += mux.pes(0x101, 9000, True, ADTS + ADTS, stream_id=0xC0)
ts += mux.pes(0x102, 9000, True, bytes([0x7F, 0xE0, 3, 1, 2, 3]), stream_id=0xBD)
ts += mux.pes(0x100, 12600, False, annexb(bytes([0x41, 0x9a]) + b"\x07" * 50))
put("mpegts", "h264-aac-opus", bytes([0]) + ts)
put("mpegts", "h264-aac-opus-chunk7", bytes([7]) + ts)
mux = TsMuxer([(0x100, 0x24, b"")])
ts = mux.tables() + mux.pes(0x100, (1 << 33) - 1, True, annexb(VPS_265, SPS_265, PPS_265, bytes([0x26, 0x01, 0x80, 1])))
put("mpegts", "h265-bounded-33bit-pts", bytes([0]) + b"\x01\x02\x03" + ts)


# --- RTP depacketizer: [flags][seq step][ts step][len u16][payload] -----------------------

def rtp(kind, packets, first_seq=1):
    out = bytearray([kind]) + struct.pack(">H", first_seq)
    for marker, new_ts, payload, *jump in packets:
        flags = (1 if marker else 0) | (4 if new_ts else 0) | (2 if jump else 0)
        out += bytes([flags, jump[0] if jump else 1, 36]) + struct.pack(">H", len(payload)) + payload
    return bytes(out)


put("rtp_depacketize", "h264-stap-fu", rtp(0, [
    (False, False, bytes([24, 0, 3, 0x67, 1, 2, 0, 2, 0x68, 3])),
    (False, False, bytes([0x7C, 0x85, 10, 11])),
    (False, False, bytes([0x7C, 0x05, 12])),
    (True, False, bytes([0x7C, 0x45, 13])),
    (False, True, bytes([0x41, 9])),
    (True, True, bytes([0x41, 8])),
]))
put("rtp_depacketize", "h264-loss", rtp(0, [
    (True, False, bytes([0x65, 1])),
    (True, True, bytes([0x41, 1]), 2),
    (True, True, bytes([0x41, 2])),
    (True, True, bytes([0x65, 3])),
]))
put("rtp_depacketize", "h265-ap-fu", rtp(1, [
    (False, False, bytes([96, 1, 0, 3, 64, 1, 7, 0, 3, 66, 1, 8])),
    (False, False, bytes([98, 1, 0x80 | 19, 1, 2])),
    (True, False, bytes([98, 1, 0x40 | 19, 3])),
]))


# --- RTP round trip: [kind][max u16][len u16 + NAL]... ------------------------------------

def nals16(*nals):
    return b"".join(struct.pack(">H", len(n)) + n for n in nals)


put("rtp_roundtrip", "h264-fragmented", bytes([0]) + struct.pack(">H", 1095) +
    nals16(SPS_720, PPS, bytes([0x65]) + bytes(i * 7 % 251 for i in range(3000)), bytes([0x41, 1, 2])))
put("rtp_roundtrip", "h264-tiny-mtu", bytes([0]) + struct.pack(">H", 0) + nals16(bytes([0x65, 1, 2, 3, 4, 5])))
put("rtp_roundtrip", "h265-fragmented", bytes([1]) + struct.pack(">H", 200) +
    nals16(VPS_265, SPS_265, PPS_265, bytes([0x26, 0x01]) + bytes(range(256)) * 3))


# --- fMP4 muxer ---------------------------------------------------------------------------

def fmp4(flags, width, height, fps100, vps, sps, pps, rate, channels, asc, frames):
    out = bytearray([flags]) + struct.pack(">IIH", width, height, fps100)
    out += nals16(vps, sps, pps)
    out += struct.pack(">IH", rate, channels) + bytes([len(asc)]) + asc
    out += struct.pack(">I", 1 << 31)  # first decode time: 0
    for f_flags, step, cts, payload, viewer in frames:
        out += bytes([f_flags]) + struct.pack(">Ii", step + (1 << 20), cts)
        out += struct.pack(">H", len(payload)) + payload + struct.pack(">I", viewer)
    return bytes(out)


AU = b"\x00\x00\x00\x04\x65\x88\x84\x21"
put("fmp4_mux", "h264-aac", fmp4(0b010, 1280, 720, 2500, b"", SPS_720, PPS, 48000, 2, bytes([0x11, 0x90]), [
    (0b10, 0, 0, AU, 0), (0b01, 1024, 0, b"\x21\x10\x04", 0), (0b00, 3600, 7200, b"\x00\x00\x00\x02\x41\x9a", 3600),
]))
put("fmp4_mux", "h265-opus", fmp4(0b111, 320, 240, 0, VPS_265, SPS_265, PPS_265, 48000, 2, b"", [
    (0b10, 0, 0, b"\x00\x00\x00\x03\x26\x01\xaf", 0), (0b01, 960, 0, b"\xfc\xff\xfe", 10),
]))


# --- WHEP SDP offers ----------------------------------------------------------------------

CHROME = """v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
a=extmap-allow-mixed
a=msid-semantic: WMS
m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 104 105 39 40 45 46 98 99 100 101 112 113 116 117 118
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:Kx1Q
a=ice-pwd:3wYHm4ZUVJz9Z3G4OAlVIuSc
a=ice-options:trickle
a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08
a=setup:actpass
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:toffset
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:3 urn:3gpp:video-orientation
a=extmap:4 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:9 urn:ietf:params:rtp-hdrext:sdes:mid
a=recvonly
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:96 VP8/90000
a=rtcp-fb:96 goog-remb
a=rtcp-fb:96 transport-cc
a=rtcp-fb:96 ccm fir
a=rtcp-fb:96 nack
a=rtcp-fb:96 nack pli
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=rtpmap:102 H264/90000
a=rtcp-fb:102 goog-remb
a=rtcp-fb:102 transport-cc
a=rtcp-fb:102 ccm fir
a=rtcp-fb:102 nack
a=rtcp-fb:102 nack pli
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f
a=rtpmap:103 rtx/90000
a=fmtp:103 apt=102
a=rtpmap:104 H264/90000
a=rtcp-fb:104 nack pli
a=fmtp:104 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f
a=rtpmap:105 rtx/90000
a=fmtp:105 apt=104
a=rtpmap:39 H264/90000
a=rtcp-fb:39 nack pli
a=fmtp:39 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f
a=rtpmap:40 rtx/90000
a=fmtp:40 apt=39
a=rtpmap:45 AV1/90000
a=fmtp:45 level-idx=5;profile=0;tier=0
a=rtpmap:46 rtx/90000
a=fmtp:46 apt=45
a=rtpmap:98 VP9/90000
a=fmtp:98 profile-id=0
a=rtpmap:99 rtx/90000
a=fmtp:99 apt=98
a=rtpmap:100 VP9/90000
a=fmtp:100 profile-id=2
a=rtpmap:101 rtx/90000
a=fmtp:101 apt=100
a=rtpmap:112 H264/90000
a=rtcp-fb:112 nack pli
a=fmtp:112 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f
a=rtpmap:113 rtx/90000
a=fmtp:113 apt=112
a=rtpmap:116 red/90000
a=rtpmap:117 rtx/90000
a=fmtp:117 apt=116
a=rtpmap:118 ulpfec/90000
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:Kx1Q
a=ice-pwd:3wYHm4ZUVJz9Z3G4OAlVIuSc
a=ice-options:trickle
a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08
a=setup:actpass
a=mid:1
a=extmap:14 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=extmap:9 urn:ietf:params:rtp-hdrext:sdes:mid
a=recvonly
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:63 red/48000/2
a=fmtp:63 111/111
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:13 CN/8000
a=rtpmap:110 telephone-event/48000
a=rtpmap:126 telephone-event/8000
""".replace("\n", "\r\n")

FIREFOX = """v=0
o=mozilla...THIS_IS_SDPARTA-99.0 2207374960451543474 0 IN IP4 0.0.0.0
s=-
t=0 0
a=fingerprint:sha-256 3F:9A:0B:8C:22:6F:1E:45:70:11:AA:03:9B:2D:5E:77:C1:0D:4A:98:FE:21:63:0C:57:8A:11:B2:46:CD:90:1E
a=group:BUNDLE 0
a=ice-options:trickle
a=msid-semantic:WMS *
m=video 9 UDP/TLS/RTP/SAVPF 120 124 121 125 126 127 97 98
c=IN IP4 0.0.0.0
a=recvonly
a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:4 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=fmtp:126 profile-level-id=42e01f;level-asymmetry-allowed=1;packetization-mode=1
a=fmtp:97 profile-level-id=42e01f;level-asymmetry-allowed=1
a=fmtp:120 max-fs=12288;max-fr=60
a=fmtp:124 apt=120
a=fmtp:121 max-fs=12288;max-fr=60
a=fmtp:125 apt=121
a=fmtp:127 apt=126
a=fmtp:98 apt=97
a=ice-pwd:a0e5c94c3d5b2c2e0c8e1a6d0b7f3e21
a=ice-ufrag:5f0a1b2c
a=mid:0
a=rtcp-fb:126 nack
a=rtcp-fb:126 nack pli
a=rtcp-fb:126 ccm fir
a=rtcp-fb:126 goog-remb
a=rtcp-fb:126 transport-cc
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:120 VP8/90000
a=rtpmap:124 rtx/90000
a=rtpmap:121 VP9/90000
a=rtpmap:125 rtx/90000
a=rtpmap:126 H264/90000
a=rtpmap:127 rtx/90000
a=rtpmap:97 H264/90000
a=rtpmap:98 rtx/90000
a=setup:actpass
""".replace("\n", "\r\n")

SAFARI_H265 = """v=0
o=- 1 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0
m=video 9 UDP/TLS/RTP/SAVPF 96 97
c=IN IP4 0.0.0.0
a=ice-ufrag:h265
a=ice-pwd:abcdefghijklmnopqrstuvwx
a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08
a=setup:actpass
a=mid:0
a=recvonly
a=rtcp-mux
a=rtpmap:96 H265/90000
a=fmtp:96 level-id=93;profile-id=1;tier-flag=0;tx-mode=SRST
a=rtpmap:97 H264/90000
a=fmtp:97 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640c1f
""".replace("\n", "\r\n")

put("whep_sdp", "chrome", CHROME)
put("whep_sdp", "firefox", FIREFOX)
put("whep_sdp", "h265", SAFARI_H265)


# --- go2rtc WebSocket messages ------------------------------------------------------------

import json

put("go2rtc_message", "mse", '{"type":"mse","value":"avc1.640029,avc1.64002A,avc1.640033,hvc1.1.6.L153.B0,mp4a.40.2,mp4a.40.5,flac,opus"}')
put("go2rtc_message", "mse-h264-only", '{"type":"mse","value":"avc1.640029"}')
put("go2rtc_message", "mse-empty", '{"type":"mse"}')
put("go2rtc_message", "webrtc-offer", json.dumps({"type": "webrtc/offer", "value": SAFARI_H265}))
put("go2rtc_message", "webrtc-old", json.dumps({"type": "webrtc", "value": {"type": "offer", "sdp": SAFARI_H265}}))
put("go2rtc_message", "candidate", '{"type":"webrtc/candidate","value":"candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host"}')
put("go2rtc_message", "query-codecs", "avc1.640029, HVC1.1.6.L153.B0 ,,mp4a.40.2")


# --- STUN routing: ops ---------------------------------------------------------------------

def stun_ops():
    out = bytearray()
    out += bytes([0, 1, 0, 1])      # add s1 on shard 0, ufrag u1
    out += bytes([0, 2, 1, 2])      # add s2 on shard 1, ufrag u2
    out += bytes([3]) + struct.pack(">H", 3) + bytes([22, 254, 253]) + bytes([0x10])  # DTLS, unknown address
    out += bytes([2, 2]) + bytes([2]) + b"zz" + bytes([0x10]) + bytes([0])  # STUN u2 from 0x10
    out += bytes([3]) + struct.pack(">H", 3) + bytes([22, 254, 253]) + bytes([0x10])  # DTLS → s2
    out += bytes([2, 0x85]) + bytes([1]) + b"q" + bytes([0x11]) + bytes([0])  # made-up ufrag
    out += bytes([1, 2])            # remove s2
    out += bytes([3]) + struct.pack(">H", 3) + bytes([22, 254, 253]) + bytes([0x10])  # → nowhere
    for a in range(10):             # s1 learns more addresses than it keeps
        out += bytes([2, 1]) + bytes([1]) + b"w" + bytes([0x20 + a]) + bytes([8]) + bytes([0x80, 0x28, 0, 4, 1, 2, 3, 4])
    return bytes(out)


put("stun_route", "sessions", stun_ops())


# --- TOML config --------------------------------------------------------------------------

README_CONFIG = '''[server]
listen = "127.0.0.1:8080"     # address:port to serve the API and UI on
token = "change-me"           # required for state changes when listening off-loopback

[sources]
allow_exec = true             # exec: sources run commands, so they are opt-in

[webrtc]
listen = "0.0.0.0:8555"       # one UDP port for every WebRTC peer
candidates = []               # extra addresses to advertise (e.g. a NAT's public address)

[[camera]]
id = "demo"                   # 1-64 characters of a-z, 0-9, _ and -; used in URLs
source = "testsrc://?size=1280x720&fps=25&gop=50&bitrate=2000k&motion=1"
on_demand = false

[[camera]]
id = "small"
source = "testsrc://?size=640x360&fps=10&motion=0"

[[camera]]
id = "front"
source = "rtsp://user:pass@192.168.1.10:554/stream1"
transport = "tcp"             # or "udp" (RTSP only; default tcp)
timeout = "10s"               # connect, each request, and silence while playing (default 10s)
user_agent = "livelens"       # optional User-Agent header
on_demand = true              # start the source with the first viewer…
idle_timeout = "10s"          # …and stop it this long after the last one leaves (default 10s)

[[camera]]
id = "usb"                    # needs [sources] allow_exec = true
source = "exec:ffmpeg -f v4l2 -i /dev/video0 -c:v libx264 -preset veryfast -tune zerolatency -g 50 -f mpegts -"

[[worker]]
name = "whisper"              # analysers can point at worker:whisper
command = ["faster-whisper-server", "--port", "{port}"]   # or one string, split like a shell
health = "http://127.0.0.1:{port}/health"                # 2xx = ready (optional)
on_demand = false             # true: run only while an analyser uses it
idle_timeout = "60s"          # on-demand: how long it outlives its last user
start_timeout = "60s"         # how long it may take to become healthy

[storage]
path = "livelens.db"          # events (SQLite, WAL); relative to this file; in memory when unset
keep_days = 7                 # older events are deleted (hourly)

[mqtt]
url = "mqtt://127.0.0.1:1883" # events to a broker (topics below)
'''

ANALYSIS = '''[[camera]]
id = "yard"
source = "rtsp://user:pass@192.168.1.11:554/stream1"
[camera.analysis.motion]      # frame differencing on a small grayscale picture
sensitivity = 0.5             # 0 (only big changes) … 1 (tiny changes)
min_area = 0.01               # fraction of the picture that must change
masks = [[0.0, 0.0, 1.0, 0.06]]   # [x, y, width, height] as fractions: ignored (timestamp overlays)
fps = 2                       # pictures analysed per second
[camera.analysis.vlm]         # any OpenAI-compatible /v1/chat/completions
endpoint = "http://127.0.0.1:11434/v1"   # Ollama, vLLM, SGLang, llama.cpp, NIM… or "worker:NAME"
model = "llava"
api_key = "secret"            # optional; sent as a bearer token, shown as "***", never logged
prompt = "Describe what you see in one sentence."
interval = "2s"               # minimum time between requests
on_motion_only = false        # ask only while motion is active
max_tokens = 100
timeout = "30s"
image_width = 640             # pictures are scaled to this width before JPEG encoding
[camera.analysis.asr]         # speech-to-text: any OpenAI-compatible /v1/audio/transcriptions
endpoint = "http://127.0.0.1:8000/v1"    # speaches / faster-whisper-server, whisper.cpp… or "worker:NAME"
model = "Systran/faster-whisper-small"
language = "en"
threshold = 12                # VAD: dB above the noise floor that counts as voice
min_speech = "200ms"          # voice this long starts a segment
min_silence = "500ms"         # silence this long ends it
max_segment = "15s"           # longer speech is cut
pad = "200ms"                 # kept before and after the voice
'''

# From the tests in src/config.rs: every problem listed with its place.
PROBLEMS = '''
colour = "red"
[server]
listen = "everywhere"
[[camera]]
id = "Front Door"
source = "http://x"
[[camera]]
id = "b"
source = "testsrc://?fps=0"
zoom = 2
[[camera]]
id = "b"
source = "exec:ffmpeg -i x -f mpegts -"
'''

put("config_toml", "readme", README_CONFIG)
put("config_toml", "readme-analysis", ANALYSIS)
put("config_toml", "problems", PROBLEMS)
put("config_toml", "empty", "")
put("config_toml", "syntax-error", "[server]\nlisten = \n")
put("config_toml", "comments", '# my cameras\n[server]\nlisten = "127.0.0.1:9000"\n\n[[camera]]\n# the porch\nid = "porch"\nsource = "testsrc://"\n')
