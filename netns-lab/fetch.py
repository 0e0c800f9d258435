"""fetch URL: print the HTTP status of URL, or why it could not be fetched (exit 1)."""

import sys
import urllib.error
import urllib.request

try:
    with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
        print(r.status, r.reason)
except (urllib.error.URLError, OSError) as e:
    print("failed:", getattr(e, "reason", e))
    sys.exit(1)
