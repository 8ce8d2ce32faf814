"""`make demo`'s last step: put a few items in the review queue of a running service.

    python -m serving.demo --url http://127.0.0.1:8000 --key BACKEND_KEY --platform-key KEY \
        --manifest M.csv [--items 6]

The membership platform's key announces three VIP members (`collector`: a person always reviews
their items); the trusted back end's key (`member_backend`, which names the member on each call)
submits items from the manifest's test split for them, one declared high-value (two blind
reviews), so a reviewer who signs in finds work waiting.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import httpx

from serving.appraisals.status import Status
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


MEMBERS = [f"demo-member-{n}" for n in range(3)]


def seed(url: str, key: str, platform_key: str, manifest: str, items: int) -> list[dict]:
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
        base_url=url, headers={"Authorization": f"Bearer {platform_key}"}, timeout=60
    ) as platform:
        for member in MEMBERS:
            platform.put(f"/v1/members/{member}", json={"tier": "collector"}).raise_for_status()
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as client:
        for number, item in enumerate(sorted(photos)[:items]):
            fields = {
                "member_id": MEMBERS[number % len(MEMBERS)],
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
    parser.add_argument("--key", required=True, help="a member_backend key")
    parser.add_argument("--platform-key", required=True, help="a platform key")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--items", type=int, default=6)
    args = parser.parse_args()
    wait_ready(args.url)
    answers = seed(args.url, args.key, args.platform_key, args.manifest, args.items)
    waiting = sum(a["status"] == Status.IN_REVIEW for a in answers)
    print(f"{waiting} item(s) wait in the review queue ({len(answers)} submitted)")


if __name__ == "__main__":
    main()
