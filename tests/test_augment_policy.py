"""The op table: its rows give the authors' level rules, the kernel reads exactly these rows
(test_augment_ops holds kernel and reference together op by op), and the docs print them."""

from pathlib import Path

import numpy as np

from ipmix_cli.augment import policy

DOCS = Path(__file__).resolve().parents[1] / "docs" / "augment.md"


def _levels():
    rs = np.random.default_rng(0)
    return list(rs.uniform(0.1, 10.0, 400)) + [0.1, 2.5, 3.0, 7.5, np.nextafter(10.0, 0.0)]


def _arg(name, level, size=32, negate=False, row=None):
    row = row if row is not None else policy.ROWS[policy.row_id("ipmix", name)]
    return policy.argument(row, level, size, negate)


def test_rows_give_the_authors_level_rules():
    # AugMix's augmentations.py: int_parameter(l, M) = int(l * M / 10), float_parameter = l * M / 10.
    for level in _levels():
        assert _arg("posterize", level) == 4 - int(level * 4 / 10)
        assert _arg("solarize", level) == 256 - int(level * 256 / 10)
        assert _arg("rotate", level) == int(level * 30 / 10)
        assert _arg("rotate", level, negate=True) == -int(level * 30 / 10)
        assert _arg("shear_x", level) == level * 0.3 / 10
        assert _arg("shear_y", level, negate=True) == -(level * 0.3 / 10)
        for size in (32, 224, 37):
            assert _arg("translate_x", level, size) == int(level * (size / 3) / 10)
            assert _arg("translate_y", level, size, negate=True) == -int(level * (size / 3) / 10)
        for name in ("color", "contrast", "brightness", "sharpness"):
            assert _arg(name, level) == level * 1.8 / 10 + 0.1
        assert _arg("autocontrast", level) == 10 - level  # IPMix's cutoff, in percent


def test_the_kernel_table_is_the_rows():
    assert policy.TABLE.shape == (len(policy.ROWS), 10)
    first = 0
    for i, row in enumerate(policy.ROWS):
        assert list(policy.TABLE[i, :7]) == [row.kernel, row.base, row.coef, row.div, row.integer,
                                             row.signed, row.by_size]
        assert (row.kernel == policy.BYTE_TABLE) == (len(row.table_args) > 0)
        if row.table_args:
            assert list(policy.TABLE[i, 7:]) == [first, row.table_args[0], row.table_args[-1]]
        else:
            assert policy.TABLE[i, policy.COL_FIRST_TABLE] == -1
        first += len(row.table_args)
    assert policy.BYTE_TABLES.shape == (first, 3, 256) and policy.BYTE_TABLES.dtype == np.uint8


def _byte_table(name, arg):
    row = policy.TABLE[policy.row_id("ipmix", name)]
    table = policy.BYTE_TABLES[int(row[policy.COL_FIRST_TABLE] + arg - row[policy.COL_ARG_MIN])]
    assert (table == table[0]).all()  # the same table for each channel
    return table[0].astype(int)


def test_byte_tables_are_the_ops_formulas_for_every_argument():
    # ImageOps' definitions: posterize keeps the top `bits` bits, solarize inverts the values
    # >= threshold, invert is 255 - v.
    v = np.arange(256)
    for bits in range(1, 9):
        assert np.array_equal(_byte_table("posterize", bits), v & ~(2 ** (8 - bits) - 1))
    for threshold in range(257):
        assert np.array_equal(_byte_table("solarize", threshold), np.where(v < threshold, v, 255 - v))
    assert np.array_equal(_byte_table("invert", 0), 255 - v)
    for name in ("posterize", "solarize"):  # every argument a level in (0, 10] can give has a table
        row = policy.ROWS[policy.row_id("ipmix", name)]
        args = {policy.argument(row, level, 32, False) for level in _levels()}
        assert args <= set(row.table_args)
    for recipe in ("ipmix", "augmix", "pixmix"):
        for name in policy.OP_NAMES:
            assert policy.ROWS[policy.row_id(recipe, name)].name == name


def test_mask_flip_form_is_found_exactly_when_it_rebuilds_the_table():
    v = np.arange(256)
    for table, (mask, threshold) in zip(policy.BYTE_TABLES, policy.BYTE_TABLE_FORMS):
        assert 0 <= mask <= 255 and 0 <= threshold <= 256
        assert np.array_equal(table, np.broadcast_to((v & mask) ^ np.where(v >= threshold, 255, 0), (3, 256)))
    rs = np.random.default_rng(1)
    for mask, threshold in [(0, 0), (0, 256), (7, 13), (255, 255), (0xF0, 1)] + [
            (int(rs.integers(0, 256)), int(rs.integers(0, 257))) for _ in range(5)]:
        table = np.broadcast_to((v & mask) ^ np.where(v >= threshold, 255, 0), (3, 256)).astype(np.uint8)
        form = policy.mask_flip_form(table)
        assert np.array_equal(np.broadcast_to((v & form[0]) ^ np.where(v >= form[1], 255, 0), (3, 256)), table)
    equalize_like = np.broadcast_to(np.sqrt(v * 255.0).astype(np.uint8), (3, 256))
    assert policy.mask_flip_form(equalize_like) == (-1, 0)
    channels_differ = np.stack([v, 255 - v, v]).astype(np.uint8)
    assert policy.mask_flip_form(channels_differ) == (-1, 0)
    assert policy.mask_flip_form(rs.integers(0, 256, (3, 256), dtype=np.uint8)) == (-1, 0)


def test_each_recipe_uses_its_authors_autocontrast():
    ipmix, plain = policy.ROWS[policy.IPMIX_AUTOCONTRAST], policy.ROWS[policy.PLAIN_AUTOCONTRAST]
    assert policy.row_id("ipmix", "autocontrast") == policy.IPMIX_AUTOCONTRAST
    assert policy.row_id("augmix", "autocontrast") == policy.row_id("pixmix", "autocontrast") == policy.PLAIN_AUTOCONTRAST
    for level in _levels():
        assert policy.argument(ipmix, level, 32, False) == 10 - level
        assert policy.argument(plain, level, 32, False) == 0


def test_docs_print_the_table():
    text = DOCS.read_text()
    assert policy.markdown_table() in text
    assert text.count("| `rotate` |") == 1
