import time


def fetch(url, attempts=3):
    for attempt in range(attempts):
        try:
            return open(url).read()
        except Exception:
            time.sleep(2 ** attempt)
