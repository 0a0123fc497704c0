import time, trio
from conftest import WireError

async def test_probe(connect):
    with trio.fail_after(5):
        t=time.monotonic()
        first = await connect()
        second = await connect()
        print("conn", time.monotonic()-t)
        await first.start("same", ["sh", "-c", "echo first"])
        await second.start("same", ["sh", "-c", "echo second"])
        print("start", time.monotonic()-t)
        one = await first.read_all("same")
        print("read1", time.monotonic()-t, one)
        two = await second.read_all("same")
        print("read2", time.monotonic()-t)
