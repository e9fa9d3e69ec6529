"""Make docs/evolution.gif, README's animation: the tutorial job (moons 200, noise 0.2, [3] tanh,
gradient descent, learning rate 2.0, l2 0.01, 20,000 epochs, snapshot_every at its default)
trained by an app of this checkout, and its GET /v1/jobs/{id}/evolution.gif.

    PYTHONPATH=. python docs/make_evolution.py        (make docs-pictures)
"""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx

from benchmarks.store_bench import TUTORIAL
from service.main import create_app
from service.settings import Settings

OUTPUT = Path(__file__).resolve().parent / "evolution.gif"


async def main() -> None:
    app = create_app(Settings(workers=1, log_level="warning"))
    async with app.router.lifespan_context(app):
        while not app.state.scratchnet.dispatcher.ready:
            await anyio.sleep(0.05)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://docs") as client:
            dataset = await client.post(
                "/v1/datasets", json={"kind": "moons", "n_samples": 200, "noise": 0.2}
            )
            job = await client.post(
                "/v1/jobs",
                json={"dataset_id": dataset.json()["id"], "hyperparameters": TUTORIAL},
            )
            job_id = job.json()["id"]
            while (await client.get(f"/v1/jobs/{job_id}")).json()["status"] != "succeeded":
                await anyio.sleep(0.1)
            gif = await client.get(
                f"/v1/jobs/{job_id}/evolution.gif",
                params={"max_frames": 40, "width": 480, "height": 360},
            )
            gif.raise_for_status()
    OUTPUT.write_bytes(gif.content)
    print(f"{OUTPUT}: {len(gif.content)} bytes")


if __name__ == "__main__":
    anyio.run(main)
