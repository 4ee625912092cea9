# Tiled: every run goes to the catalog through TiledWriter (backup folder if the server is away).
print(f"Loading {__file__}")
from tiled.queries import Key  # noqa: E402, F401

from xfct_bluesky.session import connect_storage  # noqa: E402
from xfct_bluesky.storage import load_spectra, load_tomo  # noqa: E402, F401

cat, tiled_writer = connect_storage(RE, DATA_DIR)  # noqa: F821  (RE, DATA_DIR from 00-base.py)
