using System;
using System.Text;

namespace NpcServer.Dialogue
{
    /// <summary>
    /// Reveals streamed text at a steady speed, like a typewriter, however unevenly the deltas arrive. Engine-free:
    /// the NpcNarrator component calls <see cref="Advance"/> each frame and shows <see cref="Visible"/>.
    /// Never splits a surrogate pair, so emoji never show as half a character.
    /// </summary>
    public sealed class TypewriterBuffer
    {
        readonly StringBuilder _text = new StringBuilder();
        int _visible;
        double _carry;

        /// <summary>Creates a buffer revealing <paramref name="charactersPerSecond"/> characters a second.</summary>
        public TypewriterBuffer(float charactersPerSecond = 40f)
        {
            CharactersPerSecond = charactersPerSecond;
        }

        /// <summary>Reveal speed; 0 or less shows text at once.</summary>
        public float CharactersPerSecond { get; set; }

        /// <summary>Everything received so far.</summary>
        public string FullText
        {
            get { return _text.ToString(); }
        }

        /// <summary>The part revealed so far.</summary>
        public string Visible
        {
            get { return _text.ToString(0, _visible); }
        }

        /// <summary>True when every received character is visible.</summary>
        public bool IsCaughtUp
        {
            get { return _visible >= _text.Length; }
        }

        /// <summary>Adds streamed text to reveal.</summary>
        public void Append(string delta)
        {
            if (!string.IsNullOrEmpty(delta)) _text.Append(delta);
        }

        /// <summary>Empties the buffer for a new line.</summary>
        public void Clear()
        {
            _text.Length = 0;
            _visible = 0;
            _carry = 0;
        }

        /// <summary>Shows everything received at once (the player clicked to skip).</summary>
        public void RevealAll()
        {
            _visible = _text.Length;
            _carry = 0;
        }

        /// <summary>Moves time on by <paramref name="deltaSeconds"/>; returns true when <see cref="Visible"/> changed.</summary>
        public bool Advance(float deltaSeconds)
        {
            if (IsCaughtUp)
            {
                _carry = 0;
                return false;
            }
            int before = _visible;
            if (CharactersPerSecond <= 0)
            {
                _visible = _text.Length;
            }
            else
            {
                _carry += Math.Max(0, deltaSeconds) * CharactersPerSecond;
                int step = (int)_carry;
                _carry -= step;
                _visible = Math.Min(_text.Length, _visible + step);
                // Keep a surrogate pair together: never stop between its halves.
                if (_visible > 0 && _visible < _text.Length && char.IsHighSurrogate(_text[_visible - 1])) _visible++;
            }
            return _visible != before;
        }
    }
}
