"""The hast peer wire (docs/PROTOCOL.md) in Python, for tests that speak it:
frame headers, the session handshake (session_open / session_accept /
session_proof, HKDF-SHA256 key schedule) and sealed frames (AES-256-GCM or
ChaCha20-Poly1305, header as associated data, per-direction sequence number
as nonce). Uses the `cryptography` package; tests that import this skip
when it is missing.
"""
import hashlib
import hmac
import json
import os
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = 0x54534148
VERSION = 2
HEADER = 80
TAG = 16

HELLO, HELLO_REPLY = 1, 2
SESSION_OPEN, SESSION_ACCEPT, SESSION_PROOF = 5, 6, 7
WRITE, KEEPALIVE, GOODBYE = 10, 15, 30
WITNESS_HELLO, LEASE_REQUEST, LEASE_REPLY = 40, 41, 42

_CRC_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ (0x82F63B78 if _c & 1 else 0)
    _CRC_TABLE.append(_c)


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ b) & 0xFF]
    return crc ^ 0xFFFFFFFF


def header(kind, payload_length, seq=0, offset=0, length=0, flags=0, version=VERSION):
    head = struct.pack("<IBBHQQQIIBBH32s", MAGIC, version, kind, flags, seq, offset, length,
                       payload_length, 0, 0, 0, 0, b"\0" * 32)
    return head + struct.pack("<I", crc32c(head))


def plain_frame(kind, payload=b"", seq=0):
    return header(kind, len(payload), seq) + payload


def kind_of(head):
    return head[5]


def payload_length_of(head):
    return struct.unpack_from("<I", head, 32)[0]


def read_exact(sock, n):
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError("closed")
        out += chunk
    return bytes(out)


def read_raw_frame(sock):
    """(header bytes, payload bytes) as they are on the wire."""
    head = read_exact(sock, HEADER)
    n = payload_length_of(head)
    return head, (read_exact(sock, n) if n else b"")


def hello_payload(obj, bitmap=b""):
    text = json.dumps(obj).encode()
    return struct.pack("<I", len(text)) + text + bitmap


def transcript_hash(open_payload, accept_body):
    return hashlib.sha256(struct.pack("<I", len(open_payload)) + open_payload +
                          struct.pack("<I", len(accept_body)) + accept_body).digest()


def session_keys(key, client_nonce, server_nonce, transcript):
    okm = HKDF(algorithm=hashes.SHA256(), length=128, salt=client_nonce + server_nonce,
               info=b"hast/2 session" + transcript).derive(key)
    return okm[0:32], okm[32:64], okm[64:96], okm[96:128]


class Direction:
    """One direction of a session: seals or opens frames in order."""

    def __init__(self, cipher, encrypt, key):
        self.aead = AESGCM(key) if cipher == "aes-256-gcm" else ChaCha20Poly1305(key)
        self.encrypt = encrypt
        self.seq = 0

    def _nonce(self):
        return b"\0" * 4 + struct.pack("<Q", self.seq)

    def seal(self, kind, payload=b"", seq=0, offset=0, length=0, flags=0):
        head = header(kind, len(payload) + TAG, seq, offset, length, flags)
        if self.encrypt:
            body = self.aead.encrypt(self._nonce(), payload, head)
        else:
            body = payload + self.aead.encrypt(self._nonce(), b"", head + payload)
        self.seq += 1
        return head + body

    def open(self, head, body):
        """The payload; raises cryptography's InvalidTag when it does not verify."""
        if self.encrypt:
            plain = self.aead.decrypt(self._nonce(), body, head)
        else:
            plain = body[:-TAG]
            self.aead.decrypt(self._nonce(), body[-TAG:], head + plain)
        self.seq += 1
        return plain


class Session:
    """The client side of a session over a connected socket."""

    def __init__(self, sock, key, resource, node, link, encrypt=True):
        self.sock = sock
        nonce = os.urandom(32)
        self.open_payload = json.dumps({
            "version": 2, "resource": resource, "node": node, "link": link,
            "nonce": nonce.hex(), "ciphers": ["aes-256-gcm", "chacha20-poly1305"],
            "encrypt": encrypt}).encode()
        sock.sendall(plain_frame(SESSION_OPEN, self.open_payload))
        head, payload = read_raw_frame(sock)
        if kind_of(head) != SESSION_ACCEPT:
            raise EOFError("expected session_accept, got type %d" % kind_of(head))
        body, their_proof = payload[:-32], payload[-32:]
        accept = json.loads(body)
        th = transcript_hash(self.open_payload, body)
        c2s, s2c, cconf, sconf = session_keys(key, nonce, bytes.fromhex(accept["nonce"]), th)
        self.server_proved = hmac.compare_digest(
            hmac.new(sconf, b"server" + th, hashlib.sha256).digest(), their_proof)
        # A test may go on without the server's proof (to see that the server
        # refuses a wrong key); a real node stops here.
        sock.sendall(plain_frame(SESSION_PROOF, hmac.new(cconf, b"client" + th,
                                                         hashlib.sha256).digest()))
        self.out = Direction(accept["cipher"], accept["encrypt"], c2s)
        self.inn = Direction(accept["cipher"], accept["encrypt"], s2c)

    def send(self, kind, payload=b"", seq=0):
        self.sock.sendall(self.out.seal(kind, payload, seq))

    def receive(self):
        """(kind, seq, payload) of the next frame that is not a keepalive."""
        while True:
            head, body = read_raw_frame(self.sock)
            payload = self.inn.open(head, body)
            if kind_of(head) != KEEPALIVE:
                return kind_of(head), struct.unpack_from("<Q", head, 8)[0], payload
