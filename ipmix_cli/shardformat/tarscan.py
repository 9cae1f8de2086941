"""Numba kernels that index a whole tar shard held in memory: one pass over the
ustar headers, then grouping of members into samples by key. Per-member Python work
would dominate at 32x32, where a sample is only a few kilobytes."""

from __future__ import annotations

import numpy as np
from numba import njit

# Error codes returned by scan_members (0 = fine).
SCAN_OK = 0
SCAN_BAD_CHECKSUM = 1
SCAN_TRUNCATED = 2
SCAN_BAD_TYPE = 3
SCAN_BAD_SIZE = 4
SCAN_LONG_NAME = 5

SCAN_MESSAGES = {
    SCAN_BAD_CHECKSUM: "tar header checksum mismatch (corrupt data)",
    SCAN_TRUNCATED: "truncated (the file ends inside a member or before the end-of-archive block)",
    SCAN_BAD_TYPE: "holds a tar member that is not a regular file",
    SCAN_BAD_SIZE: "tar header has an unreadable size field",
    SCAN_LONG_NAME: "tar member name uses a ustar prefix (not an ipmix shard)",
}


@njit(cache=True)
def _octal(buf, start, length):
    value = 0
    seen = False
    for i in range(start, start + length):
        c = buf[i]
        if c == 0 or c == 32:
            if seen:
                break
            continue
        if c < 48 or c > 55:
            return -1
        value = value * 8 + (c - 48)
        seen = True
    return value if seen else -1


@njit(cache=True)
def scan_members(buf):
    """Walk the headers of a tar image. Returns (count, error, error_offset, name_start,
    name_len, key_len, data_off, size) where the arrays hold `count` regular-file members."""
    n = buf.size
    cap = n // 512 + 1
    name_start = np.empty(cap, np.int64)
    name_len = np.empty(cap, np.int64)
    key_len = np.empty(cap, np.int64)
    data_off = np.empty(cap, np.int64)
    size = np.empty(cap, np.int64)
    off = 0
    k = 0
    while True:
        if off + 512 > n:
            # every tar writer ends with zero blocks: running out of data first means truncation
            return k, SCAN_TRUNCATED, off, name_start, name_len, key_len, data_off, size
        total = 0
        for i in range(off, off + 512):
            total += buf[i]
        if total == 0:
            break  # end-of-archive block
        stored = _octal(buf, off + 148, 8)
        computed = total
        for i in range(off + 148, off + 156):
            computed += 32 - buf[i]
        if stored != computed:
            return k, SCAN_BAD_CHECKSUM, off, name_start, name_len, key_len, data_off, size
        sz = _octal(buf, off + 124, 12)
        if sz < 0:
            if buf[off + 124] & 0x80:
                return k, SCAN_BAD_SIZE, off, name_start, name_len, key_len, data_off, size
            sz = 0
        flag = buf[off + 156]
        body = off + 512
        if body + sz > n:
            return k, SCAN_TRUNCATED, off, name_start, name_len, key_len, data_off, size
        if flag == 48 or flag == 0 or flag == 55:  # "0", NUL or "7": a regular file
            if buf[off + 345] != 0 and buf[off + 257] == 117:  # "ustar" with a prefix
                return k, SCAN_LONG_NAME, off, name_start, name_len, key_len, data_off, size
            ln = 0
            while ln < 100 and buf[off + ln] != 0:
                ln += 1
            base = 0
            for i in range(ln):
                if buf[off + i] == 47:  # '/'
                    base = i + 1
            kl = ln
            for i in range(base, ln):
                if buf[off + i] == 46:  # '.'
                    kl = i
                    break
            name_start[k] = off
            name_len[k] = ln
            key_len[k] = kl
            data_off[k] = body
            size[k] = sz
            k += 1
        elif flag != 53:  # directories ('5') are skipped, anything else refused
            return k, SCAN_BAD_TYPE, off, name_start, name_len, key_len, data_off, size
        off = body + ((sz + 511) // 512) * 512
    return k, SCAN_OK, 0, name_start, name_len, key_len, data_off, size


@njit(cache=True)
def _same_key(buf, a_start, a_len, b_start, b_len):
    if a_len != b_len:
        return False
    for i in range(a_len):
        if buf[a_start + i] != buf[b_start + i]:
            return False
    return True


@njit(cache=True)
def group_samples(buf, count, name_start, name_len, key_len, data_off, size, sfx, sfx_off, label_col):
    """Group consecutive members sharing a key into samples and locate each wanted field.
    sfx holds the wanted suffixes concatenated (sfx_off[j]:sfx_off[j+1] is suffix j).
    Returns (n_samples, first_member[n], field_off[n, F], field_size[n, F], label[n]);
    a missing field has offset -1, an unparsable label is -1."""
    nf = sfx_off.size - 1
    first = np.empty(count + 1, np.int64)
    ns = 0
    for m in range(count):
        if m == 0 or not _same_key(buf, name_start[m], key_len[m], name_start[m - 1], key_len[m - 1]):
            first[ns] = m
            ns += 1
    first[ns] = count
    field_off = np.full((ns, nf), -1, np.int64)
    field_size = np.zeros((ns, nf), np.int64)
    label = np.full(ns, -1, np.int64)
    for s in range(ns):
        for m in range(first[s], first[s + 1]):
            st = name_start[m] + key_len[m] + 1
            ln = name_len[m] - key_len[m] - 1
            for j in range(nf):
                a = sfx_off[j]
                if sfx_off[j + 1] - a != ln:
                    continue
                ok = True
                for i in range(ln):
                    if buf[st + i] != sfx[a + i]:
                        ok = False
                        break
                if ok:
                    field_off[s, j] = data_off[m]
                    field_size[s, j] = size[m]
                    break
        if label_col >= 0 and field_off[s, label_col] >= 0:
            value = 0
            digits = 0
            bad = False
            p = field_off[s, label_col]
            for i in range(p, p + field_size[s, label_col]):
                c = buf[i]
                if c >= 48 and c <= 57:
                    value = value * 10 + (c - 48)
                    digits += 1
                elif c == 32 or c == 10 or c == 13 or c == 9:
                    if digits > 0:
                        # whitespace after the number: the rest must be whitespace too
                        for q in range(i, p + field_size[s, label_col]):
                            c2 = buf[q]
                            if not (c2 == 32 or c2 == 10 or c2 == 13 or c2 == 9):
                                bad = True
                        break
                else:
                    bad = True
                    break
            if digits > 0 and not bad:
                label[s] = value
    return ns, first[:ns], field_off, field_size, label
