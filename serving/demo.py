"""`make demo`'s last step: put a few items in the review queue of a running service.

    python -m serving.demo --url http://127.0.0.1:8000 --key APP_KEY --manifest M.csv [--items 6]

Items from the manifest's test split are submitted as a VIP member's (a person always
reviews them), one of them declared high-value (two blind reviews), so a reviewer who signs in
finds work waiting.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import httpx

from touchstone.data.manifest import load_manifest


def wait_ready(url: str, seconds: float = 120.0) -> None:
    """Until the service's model is warm (/readyz 200)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass  # not listening yet
        time.sleep(0.5)
    raise SystemExit(f"{url} did not become ready in {seconds:.0f} s")


def seed(url: str, key: str, manifest: str, items: int) -> list[dict]:
    photos: dict[str, list] = defaultdict(list)
    categories: dict[str, str] = {}
    for record in load_manifest(manifest).records:
        if record.split == "test":
            photos[record.item_id].append(
                (record.region, (record.path.name, record.path.read_bytes(), "image/jpeg"))
            )
            categories[record.item_id] = record.category or "bag"
    answers = []
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as client:
        for number, item in enumerate(sorted(photos)[:items]):
            fields = {
                "member_id": f"demo-member-{number % 3}",
                "member_tier": "collector",
                "category": categories[item],
            }
            if number == 0:
                fields["declared_value"] = "68000"
            answer = client.post(
                "/v1/appraisals",
                data=fields,
                files=photos[item],
                headers={"Idempotency-Key": f"demo-queue-{item}"},
            )
            answer.raise_for_status()
            answers.append(answer.json())
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--items", type=int, default=6)
    args = parser.parse_args()
    wait_ready(args.url)
    answers = seed(args.url, args.key, args.manifest, args.items)
    waiting = sum(a["status"] == "in_review" for a in answers)
    print(f"{waiting} item(s) wait in the review queue ({len(answers)} submitted)")


if __name__ == "__main__":
    main()
