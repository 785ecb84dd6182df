import numpy as np
import pytest

from pipelines.ingest.dedup import near_duplicate_pairs, phash, resolve_near_duplicates, within_distance


def _brute_force(codes, d):
    x = np.bitwise_count(codes[:, None] ^ codes[None, :])
    i, j = np.triu_indices(len(codes), 1)
    keep = x[i, j] <= d
    return {(int(a), int(b)) for a, b in zip(i[keep], j[keep])}


@pytest.mark.parametrize("n,d", [(300, 0), (300, 2), (2000, 4), (2000, 6), (5000, 9)])
def test_pairs_equal_brute_force(n, d):
    rng = np.random.default_rng(n + d)
    codes = rng.integers(0, 2**64 - 1, n, dtype=np.uint64)
    # plant pairs at every distance 0..d+1, with flipped bits spread over the whole word
    for k in range(d + 2):
        a, b = 2 * k, 2 * k + 1
        bits = rng.choice(64, size=k, replace=False)
        codes[b] = codes[a] ^ np.uint64(sum(1 << int(x) for x in bits))
    found = {tuple(p) for p in near_duplicate_pairs(codes, d).tolist()}
    assert found == _brute_force(codes, d)
    assert (0, 1) in found and (2 * (d + 1), 2 * (d + 1) + 1) not in found


@pytest.mark.parametrize("n,d,n_queries", [(3000, 0, 40), (3000, 4, 40), (20000, 4, 40), (5000, 7, 40), (5000, 4, 8)])
def test_codes_within_distance_of_queries_equal_brute_force(n, d, n_queries):
    rng = np.random.default_rng(n + d)
    codes = rng.integers(0, 2**64 - 1, n, dtype=np.uint64)
    queries = rng.integers(0, 2**64 - 1, n_queries, dtype=np.uint64)
    for k in range(d + 2):  # codes at every distance 0..d+1 from the first queries
        bits = rng.choice(64, size=k, replace=False)
        codes[k] = queries[k] ^ np.uint64(sum(1 << int(x) for x in bits))
    expected = (np.bitwise_count(codes[:, None] ^ queries[None, :]) <= d).any(axis=1)
    got = within_distance(codes, queries, d, chunk=1000)
    assert got.tolist() == expected.tolist()
    assert got[: d + 1].all() and not got[d + 1]


def test_greedy_resolution_keeps_best_ranked_copy():
    codes = np.array([0b0, 0b1, 0b11, 0xFF00, 0xFF01], dtype=np.uint64)
    # 1 is within 1 of 0 (dropped); 2 is within 1 of 1 only, which was dropped: 2 stays
    assert resolve_near_duplicates(codes, 1).tolist() == [[1, 0], [4, 3]]
    assert resolve_near_duplicates(codes, 2).tolist() == [[1, 0], [2, 0], [4, 3]]
    assert resolve_near_duplicates(codes, -1).tolist() == []


def test_phash_is_stable_under_reencoding_and_differs_across_photos():
    import cv2
    from skimage import data

    a, b = data.astronaut(), data.coffee()
    ok, buf = cv2.imencode(".jpg", a, [cv2.IMWRITE_JPEG_QUALITY, 60])
    a_jpeg = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    a_small = cv2.resize(a, (500, 500), interpolation=cv2.INTER_AREA)
    ha = phash(a)
    assert np.bitwise_count(np.uint64(ha ^ phash(a_jpeg))) <= 4
    assert np.bitwise_count(np.uint64(ha ^ phash(a_small))) <= 4
    assert np.bitwise_count(np.uint64(ha ^ phash(b))) > 16
