using System;
using System.Collections.Generic;
using System.Threading;
using NUnit.Framework;

namespace NpcServer.Dialogue.Tests
{
    [TestFixture]
    public class NpcJsonTests
    {
        [Test]
        public void ParsesObjectsArraysAndScalars()
        {
            var value = (Dictionary<string, object>)NpcJson.Parse(
                "{\"line\": \"Aye \\\"captain\\\" \\u00e9\", \"n\": -1.5e2, \"ok\": true, \"no\": false, \"nil\": null,"
                + " \"list\": [1, {\"a\": []}], \"empty\": {}}");
            Assert.AreEqual("Aye \"captain\" \u00e9", value["line"]);
            Assert.AreEqual(-150.0, value["n"]);
            Assert.AreEqual(true, value["ok"]);
            Assert.AreEqual(false, value["no"]);
            Assert.IsNull(value["nil"]);
            var list = (List<object>)value["list"];
            Assert.AreEqual(1.0, list[0]);
            Assert.AreEqual(0, ((List<object>)((Dictionary<string, object>)list[1])["a"]).Count);
            Assert.AreEqual(0, ((Dictionary<string, object>)value["empty"]).Count);
        }

        [Test]
        public void RejectsBrokenJsonWithPosition()
        {
            StringAssert.Contains("at character", Assert.Throws<FormatException>(() => NpcJson.Parse("{\"line\":")).Message);
            Assert.Throws<FormatException>(() => NpcJson.Parse("{\"a\":1} x"));
            Assert.Throws<FormatException>(() => NpcJson.Parse("[1,]"));
            Assert.Throws<FormatException>(() => NpcJson.Parse("\"unterminated"));
        }

        [Test]
        public void QuoteEscapes()
        {
            Assert.AreEqual("\"a\\\"b\\\\c\\nd\\u0001\"", NpcJson.Quote("a\"b\\c\nd\u0001"));
            Assert.AreEqual("a\"b\\c\nd\u0001", NpcJson.Parse(NpcJson.Quote("a\"b\\c\nd\u0001")));
        }
    }

    [TestFixture]
    public class TypewriterBufferTests
    {
        [Test]
        public void RevealsAtTheConfiguredSpeed()
        {
            var buffer = new TypewriterBuffer(10f);
            buffer.Append("Hello ");
            buffer.Append("world");
            Assert.IsFalse(buffer.Advance(0.05f));
            Assert.AreEqual("", buffer.Visible);
            Assert.IsTrue(buffer.Advance(0.25f));
            Assert.AreEqual("Hel", buffer.Visible);
            buffer.Advance(10f);
            Assert.AreEqual("Hello world", buffer.Visible);
            Assert.IsTrue(buffer.IsCaughtUp);
            Assert.IsFalse(buffer.Advance(1f));
        }

        [Test]
        public void NeverSplitsASurrogatePair()
        {
            var buffer = new TypewriterBuffer(1f);
            buffer.Append("\U0001F37Ax");
            buffer.Advance(1f);
            Assert.AreEqual("\U0001F37A", buffer.Visible);
        }

        [Test]
        public void ZeroSpeedShowsAtOnceAndClearResets()
        {
            var buffer = new TypewriterBuffer(0f);
            buffer.Append("All at once");
            Assert.IsTrue(buffer.Advance(0f));
            Assert.AreEqual("All at once", buffer.Visible);
            buffer.Clear();
            Assert.AreEqual("", buffer.FullText);
            buffer.CharactersPerSecond = 1f;
            buffer.Append("abc");
            buffer.RevealAll();
            Assert.AreEqual("abc", buffer.Visible);
        }
    }

    [TestFixture]
    public class MainThreadQueueTests
    {
        [Test]
        public void RunsPostsFromOtherThreadsInOrderOnTheDrainingThread()
        {
            var queue = new MainThreadQueue();
            var seen = new List<int>();
            int drainThread = Thread.CurrentThread.ManagedThreadId;
            var ranOn = new List<int>();
            var worker = new Thread(() =>
            {
                for (int i = 0; i < 100; i++)
                {
                    int n = i;
                    queue.Post(() =>
                    {
                        seen.Add(n);
                        ranOn.Add(Thread.CurrentThread.ManagedThreadId);
                    });
                }
            });
            worker.Start();
            worker.Join();
            Assert.AreEqual(0, seen.Count);
            Assert.AreEqual(100, queue.Drain());
            for (int i = 0; i < 100; i++) Assert.AreEqual(i, seen[i]);
            Assert.IsTrue(ranOn.TrueForAll(id => id == drainThread));
            Assert.AreEqual(0, queue.Count);
        }

        [Test]
        public void AThrowingActionDoesNotStopTheOthers()
        {
            var queue = new MainThreadQueue();
            var seen = new List<string>();
            queue.Post(() => { throw new InvalidOperationException("boom"); });
            queue.Post(() => seen.Add("after"));
            var errors = new List<Exception>();
            queue.Drain(errors.Add);
            Assert.AreEqual(new[] { "after" }, seen.ToArray());
            Assert.AreEqual("boom", errors[0].Message);

            queue.Post(() => { throw new InvalidOperationException("again"); });
            queue.Post(() => seen.Add("still"));
            Assert.Throws<InvalidOperationException>(() => queue.Drain());
            Assert.AreEqual("still", seen[1]);
        }

        [Test]
        public void PostsDuringDrainRunNextTime()
        {
            var queue = new MainThreadQueue();
            int runs = 0;
            queue.Post(() => queue.Post(() => runs++));
            Assert.AreEqual(1, queue.Drain());
            Assert.AreEqual(0, runs);
            Assert.AreEqual(1, queue.Drain());
            Assert.AreEqual(1, runs);
        }
    }
}
