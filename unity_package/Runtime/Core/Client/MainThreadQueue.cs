using System;
using System.Collections.Generic;

namespace NpcServer.Dialogue
{
    /// <summary>
    /// Actions posted from any thread, run later in order on the thread that calls <see cref="Drain"/> (in Unity,
    /// a MonoBehaviour's Update on the main thread). Transports report deltas on their own threads; engine objects
    /// may only be touched on the main thread.
    /// </summary>
    public sealed class MainThreadQueue
    {
        readonly object _gate = new object();
        List<Action> _pending = new List<Action>();
        List<Action> _running = new List<Action>();

        /// <summary>Actions waiting to run.</summary>
        public int Count
        {
            get
            {
                lock (_gate) return _pending.Count;
            }
        }

        /// <summary>Queues an action; safe from any thread.</summary>
        public void Post(Action action)
        {
            if (action == null) throw new ArgumentNullException("action");
            lock (_gate) _pending.Add(action);
        }

        /// <summary>
        /// Runs every queued action in posting order and returns how many ran. An action that throws does not stop
        /// the others: its exception goes to <paramref name="onError"/> (or is rethrown after the rest ran when
        /// onError is null). Actions posted while draining run on the next call.
        /// </summary>
        public int Drain(Action<Exception> onError = null)
        {
            lock (_gate)
            {
                var swap = _running;
                _running = _pending;
                _pending = swap;
            }
            Exception first = null;
            int ran = _running.Count;
            foreach (var action in _running)
            {
                try
                {
                    action();
                }
                catch (Exception e)
                {
                    if (onError != null) onError(e);
                    else if (first == null) first = e;
                }
            }
            _running.Clear();
            if (first != null) throw first;
            return ran;
        }
    }
}
